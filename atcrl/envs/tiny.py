"""Tiny pixel environments rendered with numpy: fast, deterministic under a seed, learnable in seconds.

They exist so tests and demos can show an agent learning from pixels without a simulator.
Both return single channels-first uint8 frames; make_env adds frame stacking and action repeat.

* point: a red dot moves on the plane [-1, 1]^2 (action = velocity command in [-1, 1]^2); the dense
  reward 1 - distance pulls it to a fixed green target disc. 50 steps, then truncated. RGB.
* catch: a ball falls one row per step on a 10 x 10 grid; a 3-cell paddle on the bottom row moves
  left / stays / moves right. +1 for a catch, -1 for a miss, and the episode terminates. Grey.
* cue: a memory test. The first frame is filled with one of two cue colours, the next ``corridor`` frames
  are blank; the action of the last step (after the corridor) must name the cue (0 or 1) for a reward of 1
  (else 0), and the episode terminates. Only the last action counts, so an agent without memory of the
  first frame stays at chance (0.5). ``corridor + 1`` steps per episode. RGB.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from atcrl.envs.errors import unknown
from atcrl.envs.meta import Built
from atcrl.envs.wrappers import ActionRepeat


class TinyPoint(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    max_steps = 50
    target = np.array([0.5, 0.5])
    target_radius = 0.3
    dot_radius = 0.12
    speed = 0.15
    """Distance moved per step at full action."""

    def __init__(self, image_size: int = 84) -> None:
        self.size = image_size
        self.observation_space = gym.spaces.Box(0, 255, (3, image_size, image_size), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        # World coordinates of pixel centres; y points up, so row 0 is y = +1.
        centres = (np.arange(image_size) + 0.5) / image_size * 2 - 1
        self._px, self._py = np.meshgrid(centres, -centres)
        in_target = np.hypot(self._px - self.target[0], self._py - self.target[1]) <= self.target_radius
        self._background = np.zeros((3, image_size, image_size), np.uint8)
        self._background[:] = np.array([25, 25, 40], np.uint8)[:, None, None]
        self._background[:, in_target] = np.array([40, 170, 70], np.uint8)[:, None]
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._t = 0

    def _physics(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel]).astype(np.float64)

    def _render(self) -> np.ndarray:
        frame = self._background.copy()
        on_dot = np.hypot(self._px - self._pos[0], self._py - self._pos[1]) <= self.dot_radius
        frame[:, on_dot] = np.array([235, 60, 50], np.uint8)[:, None]
        return frame

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.9, 0.9, size=2)
        self._vel = np.zeros(2)
        self._t = 0
        return self._render(), {"physics": self._physics()}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64).reshape(2), -1.0, 1.0)
        new_pos = np.clip(self._pos + self.speed * action, -1.0, 1.0)
        self._vel = new_pos - self._pos
        self._pos = new_pos
        self._t += 1
        reward = 1.0 - float(np.linalg.norm(self._pos - self.target))
        truncated = self._t >= self.max_steps
        return self._render(), reward, False, truncated, {"physics": self._physics()}


class TinyCatch(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    rows = 10
    cols = 10
    paddle_half_width = 1
    """The paddle covers columns paddle_x - 1 .. paddle_x + 1."""

    def __init__(self, image_size: int = 84) -> None:
        if image_size < self.rows:
            raise ValueError(f"tiny:catch needs image_size >= {self.rows}, got {image_size}")
        self.size = image_size
        self.observation_space = gym.spaces.Box(0, 255, (1, image_size, image_size), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        # Nearest-cell lookup from pixels to the grid, so any image size shows the same picture.
        self._row_of_pixel = np.arange(image_size) * self.rows // image_size
        self._col_of_pixel = np.arange(image_size) * self.cols // image_size
        self._ball = np.zeros(2, np.int64)  # (x, y) in cells, y = 0 at the top
        self._paddle = self.cols // 2

    def _physics(self) -> np.ndarray:
        return np.array([self._ball[0], self._ball[1], self._paddle], np.float64)

    def _render(self) -> np.ndarray:
        grid = np.zeros((self.rows, self.cols), np.uint8)
        lo, hi = self._paddle - self.paddle_half_width, self._paddle + self.paddle_half_width
        grid[self.rows - 1, lo : hi + 1] = 150
        grid[self._ball[1], self._ball[0]] = 255
        return grid[np.ix_(self._row_of_pixel, self._col_of_pixel)][None]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._ball = np.array([self.np_random.integers(self.cols), 0])
        self._paddle = self.cols // 2
        return self._render(), {"physics": self._physics()}

    def step(self, action):
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"tiny:catch actions are 0 (left), 1 (stay), 2 (right); got {action!r}")
        lo, hi = self.paddle_half_width, self.cols - 1 - self.paddle_half_width
        self._paddle = int(np.clip(self._paddle + int(action) - 1, lo, hi))
        self._ball[1] += 1
        landed = self._ball[1] == self.rows - 1
        reward = 0.0
        if landed:
            reward = 1.0 if abs(self._ball[0] - self._paddle) <= self.paddle_half_width else -1.0
        return self._render(), reward, bool(landed), False, {"physics": self._physics()}


class TinyCue(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    corridor = 3
    """Blank frames between the cue and the step whose action is judged."""
    colours = np.array([[230, 50, 50], [50, 200, 60]], np.uint8)
    """Cue 0 is red, cue 1 green."""
    blank = np.array([40, 40, 60], np.uint8)

    def __init__(self, image_size: int = 84) -> None:
        self.size = image_size
        self.observation_space = gym.spaces.Box(0, 255, (3, image_size, image_size), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self._cue = 0
        self._t = 0

    def _physics(self) -> np.ndarray:
        return np.array([self._cue, self._t], np.float64)

    def _render(self) -> np.ndarray:
        colour = self.colours[self._cue] if self._t == 0 else self.blank
        return np.broadcast_to(colour[:, None, None], (3, self.size, self.size)).copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._cue, self._t = int(self.np_random.integers(2)), 0
        return self._render(), {"physics": self._physics()}

    def step(self, action):
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"tiny:cue actions are 0 and 1 (the cue to name); got {action!r}")
        last = self._t == self.corridor
        reward = float(int(action) == self._cue) if last else 0.0
        self._t += 1
        return self._render(), reward, bool(last), False, {"physics": self._physics()}


# name -> (class, default frame stack, physics size, underlying steps per episode)
TINY_ENVS: dict[str, tuple[type[gym.Env], int, int, int]] = {
    "point": (TinyPoint, 3, 4, TinyPoint.max_steps),
    "catch": (TinyCatch, 4, 3, TinyCatch.rows - 1),
    "cue": (TinyCue, 1, 2, TinyCue.corridor + 1),
}


def build_tiny(name: str, *, action_repeat: int | None, size: tuple[int, int], fast_render: bool) -> Built:
    """A tiny env producing single frames; fast_render is meaningless here (rendering is numpy)."""
    if name not in TINY_ENVS:
        raise unknown("tiny env", name, TINY_ENVS, example="tiny:point")
    cls, stack, physics_dim, episode_steps = TINY_ENVS[name]
    if size[0] != size[1]:
        raise ValueError(f"tiny:{name} renders square frames only; give image_size as one int, got {size[0]}x{size[1]}")
    repeat = action_repeat or 1
    env: gym.Env = cls(size[0])
    if repeat > 1:
        env = ActionRepeat(env, repeat)
    return Built(env, stack, repeat, physics_dim, math.ceil(episode_steps / repeat))
