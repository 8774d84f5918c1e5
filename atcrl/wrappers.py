"""Gymnasium wrappers that replace pixel observations by an encoder's features.

    env = EncodedObservation(atcrl.make_env("tiny:catch"), atcrl.load_encoder("runs/atc/encoder"))
    vec = EncodedVectorObservation(make_vec_env("tiny:catch", 8), encoder)   # one batched forward per step

Features are float32 vectors ``[feature_dim]`` (``latent=True``: latent images ``[C', H', W']``),
computed without gradients on the encoder's device and returned as numpy arrays, so any agent
reads them like any other Box observation. Every atcrl conv ends in a ReLU, so the space is
``Box(0, inf)``. The vector wrapper also encodes ``info["final_obs"]`` (same-step autoreset), so a
bootstrap from the last observation of an episode sees features, not pixels.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space
from torch import nn

from atcrl.nets.encoders import ConvEncoder
from atcrl.pretrained import as_conv_encoder

__all__ = ["EncodedObservation", "EncodedVectorObservation", "feature_space"]


def feature_space(encoder: ConvEncoder, latent: bool) -> gym.spaces.Box:
    """The space of one encoded observation: features are post-ReLU, so in [0, inf)."""
    shape = tuple(encoder.feature_shape) if latent else (encoder.feature_dim,)
    return gym.spaces.Box(0.0, np.inf, shape, np.float32)


class _Encode:
    """The conv, the expected pixel space, and one batched no-grad forward to numpy."""

    def __init__(self, encoder: nn.Module, pixels: gym.Space, latent: bool) -> None:
        self.conv = as_conv_encoder(encoder)
        if not isinstance(pixels, gym.spaces.Box) or tuple(pixels.shape) != self.conv.in_shape:
            raise ValueError(
                f"the encoder reads observations of shape {self.conv.in_shape}, but the env's observation space "
                f"is {pixels}: make the env with the frame stack and image size the encoder was trained on"
            )
        self.latent = latent
        self.space = feature_space(self.conv, latent)

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """[B, *in_shape] uint8 -> [B, *space.shape] float32."""
        device = next(self.conv.parameters()).device
        z = self.conv(torch.as_tensor(np.ascontiguousarray(pixels), device=device))
        z = z if self.latent else z.flatten(1)
        return z.float().cpu().numpy()


class EncodedObservation(gym.ObservationWrapper):
    """A single env whose observations are ``encoder``'s features of its pixel observations.

    encoder: a ConvEncoder or the PretrainedEncoder of ``atcrl.load_encoder``; its device is used.
    latent: return the conv feature maps [C', H', W'] instead of flat vectors [feature_dim].
    """

    def __init__(self, env: gym.Env, encoder: nn.Module, *, latent: bool = False) -> None:
        super().__init__(env)
        self._encode = _Encode(encoder, env.observation_space, latent)
        self.observation_space = self._encode.space

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self._encode(np.asarray(observation)[None])[0]


class EncodedVectorObservation(gym.vector.VectorWrapper):
    """A vector env whose observations are encoded in one batched forward per step.

    Works with every autoreset mode: under same-step autoreset (atcrl.envs.make_vec_env) the last
    observations in ``info["final_obs"]`` are encoded too.
    """

    def __init__(self, env: gym.vector.VectorEnv, encoder: nn.Module, *, latent: bool = False) -> None:
        super().__init__(env)
        self._encode = _Encode(encoder, env.single_observation_space, latent)
        self.single_observation_space = self._encode.space
        self.observation_space = batch_space(self._encode.space, env.num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._encode(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if "final_obs" in info:
            info = {**info, "final_obs": self._encode_final(info["final_obs"], info["_final_obs"])}
        return self._encode(obs), reward, terminated, truncated, info

    def _encode_final(self, final_obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """final_obs is an object array holding one observation where mask is True (None elsewhere)."""
        out = np.full(len(final_obs), None, dtype=object)
        rows = np.flatnonzero(mask)
        if len(rows):
            for i, z in zip(rows, self._encode(np.stack([final_obs[i] for i in rows]))):
                out[i] = z
        return out
