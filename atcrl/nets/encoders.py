"""Conv encoders: uint8 images in, float feature maps out.

Every encoder exposes ``in_shape``, ``feature_shape`` (C', H', W') and ``feature_dim`` so any
head (RL or UL) can sit on any encoder. Float input is taken as already scaled, which lets
the same module run on cached latents or pre-normalised images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

EncoderName = Literal["dmc", "atari", "dmlab"]


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer: output channels, kernel, stride, padding."""

    channels: int
    kernel: int
    stride: int
    padding: int = 0
    residual: bool = False
    """Add the layer's input to its (post-ReLU) output; needs equal in/out shapes."""


# Reference architectures (docs/reference-settings.md, "Encoders").
ARCHITECTURES: dict[str, tuple[ConvSpec, ...]] = {
    "dmc": (ConvSpec(32, 3, 2), ConvSpec(32, 3, 2), ConvSpec(32, 3, 2), ConvSpec(32, 3, 1)),
    "atari": (ConvSpec(32, 8, 4), ConvSpec(64, 4, 2), ConvSpec(64, 3, 1)),
    "dmlab": (
        ConvSpec(32, 8, 4),
        ConvSpec(64, 4, 2),
        ConvSpec(64, 3, 1, padding=1, residual=True),
        ConvSpec(64, 3, 1, padding=1, residual=True),
    ),
}


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights (ReLU gain) and zero biases for every conv and linear layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvEncoder(nn.Module):
    """A stack of Conv2d + ReLU layers (optionally residual), e.g. ``ConvEncoder("dmc", (9, 84, 84))``."""

    def __init__(self, arch: EncoderName, in_shape: tuple[int, int, int]):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown encoder {arch!r}; choose one of {sorted(ARCHITECTURES)}")
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {in_shape}")
        self.arch = arch
        self.in_shape = tuple(int(s) for s in in_shape)
        specs = ARCHITECTURES[arch]
        self.residual = [s.residual for s in specs]
        channels = [self.in_shape[0]] + [s.channels for s in specs]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, s.channels, s.kernel, s.stride, s.padding)
            for c_in, s in zip(channels[:-1], specs)
        )
        kaiming_init(self)
        h, w = self.in_shape[1:]
        for i, s in enumerate(specs):
            h, w = ((d + 2 * s.padding - s.kernel) // s.stride + 1 for d in (h, w))
            if min(h, w) < 1:
                raise ValueError(f"input {self.in_shape} is too small for the {arch} encoder "
                                 f"(nothing left after conv layer {i + 1})")
        self.feature_shape: tuple[int, int, int] = (specs[-1].channels, h, w)
        self.feature_dim = math.prod(self.feature_shape)
        self.channels_last = True
        """Run the convs on channels-last (NHWC) activations: on this CPU (oneDNN) forward + backward ran
        about 1.8x faster than NCHW. Only activations change layout: the weights stay contiguous, so
        checkpoints are unaffected. Set by atcrl.fastpath.prepare_module (False on the fp32-eager path)."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] uint8 (scaled to [0, 1] here) or float -> [B, *feature_shape]."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        if obs.dtype == torch.uint8:
            # Straight to the autocast dtype (bf16) when autocast is on: one pass over the pixels, not two.
            dtype = _autocast_dtype(obs.device)
            x = obs.to(dtype, memory_format=layout).div_(255.0)  # one copy: dtype and layout
        else:
            x = obs.contiguous(memory_format=layout)
        for conv, residual in zip(self.convs, self.residual):
            # In place: a conv's backward needs its input, not its output, so this saves one activation-sized
            # allocation per layer (a few percent of a training step at batch 128-512).
            y = torch.relu_(conv(x))
            x = x + y if residual else y
        return x.contiguous()  # callers .view() the features


def _autocast_dtype(device: torch.device) -> torch.dtype:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def check_input(encoder: ConvEncoder, obs_shape: tuple[int, ...]) -> None:
    """Refuse an observation shape the encoder was not built for, with a message that says both."""
    if tuple(obs_shape) != encoder.in_shape:
        raise ValueError(
            f"the {encoder.arch} encoder expects observations of shape {encoder.in_shape}, "
            f"but the environment produces {tuple(obs_shape)}"
        )
