"""One recorded episode in memory: single frames (not stacks) plus what happened at each step.

An episode with T steps holds T + 1 frames: ``frames[0]`` is the frame after reset and
``frames[t + 1]`` the frame after action ``actions[t]``. A frame-stacked observation at
time t is built at read time from ``frames[t - k + 1 .. t]``, repeating ``frames[0]``
before the episode start (the same padding gymnasium's frame stack uses at reset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    frames: np.ndarray
    """[T + 1, C, H, W] single frames (uint8 pixels, or float latent images)."""
    actions: np.ndarray
    """[T, *action_shape] actions; float32 for continuous, int64 for discrete."""
    rewards: np.ndarray
    """[T] float32 environment rewards (not clipped)."""
    terminated: bool
    """True when the episode ended in a true terminal state (no bootstrapping past it)."""
    truncated: bool
    """True when the episode was cut by a time limit (bootstrapping past it is fine)."""
    physics: np.ndarray | None = None
    """[T + 1, S] float64 low-dimensional physics state for each frame, when the env has one."""
    task: str = ""
    """Task id, e.g. "dmc:cartpole-swingup"; lets multi-task datasets say where each episode came from."""

    def __post_init__(self) -> None:
        T = len(self.actions)
        if self.frames.ndim != 4:
            raise ValueError(f"frames must be [T+1, C, H, W], got shape {self.frames.shape}")
        if len(self.frames) != T + 1:
            raise ValueError(f"an episode of {T} actions needs {T + 1} frames, got {len(self.frames)}")
        if self.rewards.shape != (T,):
            raise ValueError(f"rewards must have shape ({T},), got {self.rewards.shape}")
        if self.physics is not None and len(self.physics) != T + 1:
            raise ValueError(f"physics must have {T + 1} rows (one per frame), got {len(self.physics)}")
        if self.terminated and self.truncated:
            raise ValueError("an episode is either terminated or truncated, not both")

    def __len__(self) -> int:
        """Number of steps (actions) in the episode."""
        return len(self.actions)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.frames.shape[1:])


def stack_indices(t: np.ndarray, k: int) -> np.ndarray:
    """Frame indices (within one episode) making the k-stack at times ``t``: oldest first.

    Returns an int array of shape [*t.shape, k]; indices before 0 are clamped to 0 so the
    first frame repeats at the episode start.
    """
    offsets = np.arange(-(k - 1), 1)
    return np.maximum(np.asarray(t)[..., None] + offsets, 0)


def stacked_frames(frames: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """Frame-stacked observations [len(t), k * C, H, W] at times ``t`` of one episode's frames."""
    idx = stack_indices(np.asarray(t), k)
    stacks = frames[idx]  # [N, k, C, H, W]
    return stacks.reshape(len(idx), -1, *frames.shape[2:])
