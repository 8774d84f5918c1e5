"""Pixel-env building blocks shared by the families: frame stacking, action repeat, resizing.

Every family first produces single channels-first uint8 frames [C, H, W]; FrameStack then turns them
into the agent's observation [k * C, H, W].
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np


class FrameStack(gym.Wrapper):
    """Concatenate the last k frames along channels, oldest first; reset pads with k copies of frame 0.

    Matches the layout the replay rebuilds from stored single frames (atcrl.data.episode.stack_indices).
    """

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3):
            raise ValueError(f"FrameStack needs uint8 [C, H, W] frames, got {space}")
        c, h, w = space.shape
        self.k = k
        self.observation_space = gym.spaces.Box(0, 255, (k * c, h, w), np.uint8)
        self._frames: deque[np.ndarray] = deque(maxlen=k)

    def _obs(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        frame, info = self.env.reset(seed=seed, options=options)
        for _ in range(self.k):
            self._frames.append(frame)
        return self._obs(), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(frame)
        # Plain Python types for every family (some gymnasium envs return ints or numpy bools).
        return self._obs(), float(reward), bool(terminated), bool(truncated), info


class ActionRepeat(gym.Wrapper):
    """Repeat each action `repeat` times, summing rewards and stopping early when the episode ends."""

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        if repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {repeat}")
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


@lru_cache(maxsize=64)
def resize_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse resampling along one axis: out[i] = sum_m weight[i, m] * in[index[i, m]].

    Shrinking averages the input pixels each output pixel covers, weighted by the covered fraction
    (area interpolation, the usual choice for Atari frames: thin objects do not vanish). Enlarging
    interpolates linearly between pixel centres. Kept sparse (a few taps per output pixel) because a
    dense matrix product is far slower on small frames.
    """
    dense = np.zeros((n_out, n_in), np.float64)
    if n_out <= n_in:
        scale = n_in / n_out
        for i in range(n_out):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
                dense[i, j] = min(hi, j + 1) - max(lo, j)
        dense /= scale
    else:
        centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        left = np.floor(centres).astype(int)
        right = np.minimum(left + 1, n_in - 1)
        frac = centres - left
        dense[np.arange(n_out), left] += 1 - frac
        dense[np.arange(n_out), right] += frac
    taps = int((dense > 0).sum(axis=1).max())
    index = np.zeros((n_out, taps), np.int64)
    weight = np.zeros((n_out, taps), np.float32)
    for i, row in enumerate(dense):
        nonzero = np.flatnonzero(row)
        index[i, : len(nonzero)] = nonzero
        weight[i, : len(nonzero)] = row[nonzero]
    return index, weight


def resize_chw(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 [C, H, W] frame to [C, height, width] (see resize_weights)."""
    _, h, w = frame.shape
    if (h, w) == (height, width):
        return frame
    row_index, row_weight = resize_weights(h, height)
    col_index, col_weight = resize_weights(w, width)
    rows = np.einsum("chmw,hm->chw", frame[:, row_index].astype(np.float32), row_weight)
    out = np.einsum("chwm,wm->chw", rows[:, :, col_index], col_weight)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def image_layout(space: gym.Space) -> str | None:
    """"HW", "HWC" or "CHW" when `space` holds uint8 images, else None.

    Channels (1, 3 or 4) are recognised at either end; an ambiguous shape is read as HWC, gymnasium's
    convention for rendered frames.
    """
    if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8):
        return None
    shape = space.shape
    if len(shape) == 2 and min(shape) >= 8:
        return "HW"
    if len(shape) == 3:
        if shape[-1] in (1, 3, 4) and min(shape[:2]) >= 8:
            return "HWC"
        if shape[0] in (1, 3, 4) and min(shape[1:]) >= 8:
            return "CHW"
    return None


def to_chw(obs: np.ndarray, layout: str) -> np.ndarray:
    """An image observation as [C, H, W]; an alpha channel is dropped."""
    if layout == "HW":
        frame = obs[None]
    elif layout == "HWC":
        frame = np.moveaxis(obs, -1, 0)
    else:
        frame = obs
    if frame.shape[0] == 4:
        frame = frame[:3]
    return np.ascontiguousarray(frame)


class PixelFrames(gym.ObservationWrapper):
    """Turn an env with image observations (HW, HWC or CHW uint8) into [C, height, width] frames."""

    def __init__(self, env: gym.Env, size: tuple[int, int]) -> None:
        super().__init__(env)
        layout = image_layout(env.observation_space)
        if layout is None:
            raise ValueError(
                f"observation space {env.observation_space} is not an image: expected a uint8 Box of shape "
                "HxW, HxWxC or CxHxW (C in 1, 3, 4) with sides >= 8"
            )
        self.layout = layout
        shape = env.observation_space.shape
        channels = 1 if layout == "HW" else (shape[-1] if layout == "HWC" else shape[0])
        self.size = size
        """Frame (height, width) in pixels."""
        self.observation_space = gym.spaces.Box(0, 255, (min(channels, 3), *size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return resize_chw(to_chw(np.asarray(observation), self.layout), *self.size)
