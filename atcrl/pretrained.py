"""An encoder as a feature function for other people's code: uint8 observations in, float features out.

``PretrainedEncoder`` wraps a ``ConvEncoder`` with what a caller needs to feed it: the observation
shape and dtype it expects (``in_shape``, uint8 frames stacked on channels, oldest first), the
preprocessing it applies (``preprocessing``), the size of what comes out (``feature_dim``,
``feature_shape``) and whether its weights are frozen. It accepts numpy arrays or tensors, one
observation or a batch, and moves them to its own device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atcrl.encoder_io import encoder_info, load_encoder
from atcrl.nets.encoders import ConvEncoder

__all__ = ["PREPROCESSING", "PretrainedEncoder", "as_conv_encoder"]

PREPROCESSING = "uint8 pixels / 255 (float input is taken as already scaled to [0, 1])"
"""What every atcrl encoder does to its input before the first conv."""


class PretrainedEncoder(nn.Module):
    """``encoder(obs)`` -> features ``[B, feature_dim]`` (or ``[feature_dim]`` for one observation).

    obs: uint8 ``[B, *in_shape]`` or ``[*in_shape]``, numpy or torch, on any device.
    ``latent(obs)`` gives the conv feature maps ``[B, *feature_shape]`` instead of flat vectors.
    """

    def __init__(self, conv: ConvEncoder, *, freeze: bool = True, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.in_shape: tuple[int, int, int] = tuple(conv.in_shape)
        """Observation shape (frame_stack * C, H, W) the encoder was trained on."""
        self.obs_dtype = np.uint8
        """Observation dtype it expects from an environment."""
        self.preprocessing = PREPROCESSING
        self.feature_shape: tuple[int, int, int] = tuple(conv.feature_shape)
        """Shape of one latent image (C', H', W'), what ``latent`` returns per observation."""
        self.feature_dim: int = conv.feature_dim
        """Length of one flat feature vector, what ``forward`` returns per observation."""
        self.info: dict[str, Any] = dict(info or {})
        """The export's json description (objective, data, training settings), empty when built in memory."""
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    @classmethod
    def load(cls, path: str | Path, *, freeze: bool = True, device: str | torch.device = "cpu",
             expect_in_shape: tuple[int, ...] | None = None) -> PretrainedEncoder:
        """An exported encoder (``atcrl pretrain`` / ``atcrl export`` output: a directory, .safetensors or .json)."""
        conv = load_encoder(path, expect_in_shape=expect_in_shape)
        return cls(conv, freeze=freeze, info=encoder_info(path)).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.conv.parameters()).device

    def preprocess(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batched tensor on the encoder's device, shape-checked; pixels stay uint8 (the conv scales them)."""
        x = torch.as_tensor(obs, device=self.device)
        if tuple(x.shape) == self.in_shape:
            x = x.unsqueeze(0)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"this encoder reads observations of shape {self.in_shape} (or a batch [B, *shape]), "
                f"got {tuple(x.shape)}: make the env with the frame stack and image size it was trained on"
            )
        if x.is_floating_point():
            return x.float()  # e.g. float64 from numpy; the conv's weights are float32
        if x.dtype != torch.uint8:
            raise ValueError(f"observations must be uint8 pixels (or floats in [0, 1]), got dtype {x.dtype}")
        return x

    def latent(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Conv feature maps ``[B, *feature_shape]`` (``[*feature_shape]`` for one observation)."""
        z = self.conv(self.preprocess(obs))
        return z[0] if tuple(np.shape(obs)) == self.in_shape else z

    def forward(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        z = self.conv(self.preprocess(obs)).flatten(1)
        return z[0] if tuple(np.shape(obs)) == self.in_shape else z


def as_conv_encoder(encoder: nn.Module) -> ConvEncoder:
    """The ConvEncoder inside ``encoder`` (a PretrainedEncoder or a ConvEncoder itself)."""
    conv = encoder.conv if isinstance(encoder, PretrainedEncoder) else encoder
    if not isinstance(conv, ConvEncoder):
        raise TypeError(
            f"expected an atcrl encoder (ConvEncoder or the PretrainedEncoder of atcrl.load_encoder), "
            f"got {type(encoder).__name__}"
        )
    return conv
