"""A Stable-Baselines3 features extractor around an atcrl encoder (the ``sb3`` extra).

    from stable_baselines3 import PPO
    from atcrl.integrations.sb3 import ATCExtractor

    policy_kwargs = {"features_extractor_class": ATCExtractor,
                     "features_extractor_kwargs": {"encoder": "runs/atc-catch", "freeze": True}}
    model = PPO("CnnPolicy", atcrl.make_env("tiny:catch"), policy_kwargs=policy_kwargs)

SB3's orthogonal re-initialisation of features extractors (``ortho_init``) does not reach the
encoder: its pretrained weights are kept. Frozen (the default), the encoder's weights never change: it runs without gradients and its
parameters have ``requires_grad=False``, so SB3's optimizer leaves them untouched. With
``freeze=False`` the RL loss fine-tunes it with the policy (and value, when shared) heads.
SB3 scales image observations to [0, 1] floats (``normalize_images=True``, its default), which
is the input scaling atcrl encoders use for float input; the first batch is checked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from atcrl.pretrained import PretrainedEncoder, as_conv_encoder

__all__ = ["ATCExtractor"]


class ATCExtractor(BaseFeaturesExtractor):
    """Flat conv features ``[B, feature_dim]`` of an exported (or in-memory) atcrl encoder.

    observation_space: the env's uint8 pixel space; it must match the encoder's input shape.
    encoder: what ``atcrl pretrain`` / ``atcrl export`` wrote (directory, .safetensors or .json), or an
        encoder object (ConvEncoder or ``atcrl.load_encoder``'s module), which is then used, not copied.
    freeze: keep the encoder's weights fixed (True) or fine-tune them with the RL loss (False).
    """

    def __init__(self, observation_space: gym.spaces.Box, encoder: str | Path | nn.Module, freeze: bool = True) -> None:
        shape = tuple(observation_space.shape or ())
        if isinstance(encoder, (str, Path)):
            encoder = PretrainedEncoder.load(encoder, freeze=freeze, expect_in_shape=shape)
        conv = as_conv_encoder(encoder)
        if conv.in_shape != shape:
            raise ValueError(f"the encoder reads observations of shape {conv.in_shape}, but the env gives {shape}: "
                             "make the env with the frame stack and image size the encoder was trained on")
        super().__init__(observation_space, features_dim=conv.feature_dim)
        self.encoder = conv
        self.freeze = freeze
        conv.requires_grad_(not freeze)
        self._checked_scale = False

    def apply(self, fn: Callable[[nn.Module], None]) -> ATCExtractor:
        """``fn`` on this module alone, never on the encoder inside it.

        SB3's actor-critic policies (``ortho_init=True``, their default) re-initialise their features
        extractor with ``extractor.apply(init_weights)``; that would overwrite the pretrained weights.
        """
        fn(self)
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if not self._checked_scale:
            if observations.is_floating_point() and float(observations.max()) > 1.0:
                raise ValueError("ATCExtractor got pixels above 1.0: keep SB3's normalize_images=True so "
                                 "observations arrive scaled to [0, 1]")
            self._checked_scale = True
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self.encoder(observations).flatten(1)
