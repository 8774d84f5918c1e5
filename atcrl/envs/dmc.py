"""DeepMind Control Suite tasks from pixels ("dmc:<domain>-<task>").

Each agent step repeats the action `action_repeat` times (rewards summed) and renders one RGB frame
from camera 0 (quadruped: camera 2). Episodes last 1000 underlying steps and then end as *truncated*:
the time limit is not part of the task, so agents may bootstrap past it. dm_control's own time limit
is switched off and counted here so the bound is exact for every repeat.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from atcrl.envs.errors import require, unknown
from atcrl.envs.gl import check_dm_control_backend, configure_headless_gl
from atcrl.envs.meta import Built

TIME_LIMIT = 1000
"""Underlying env steps per episode."""
DEFAULT_ACTION_REPEAT = {"cartpole": 8, "cheetah": 4, "ball_in_cup": 4, "reacher": 4, "walker": 2, "finger": 2}
"""Per-domain action repeat used for pixel SAC in the paper; other domains use 4."""
OTHER_ACTION_REPEAT = 4
CAMERA = {"quadruped": 2}
"""Camera id per domain when not 0 (quadruped's camera 0 does not follow the body)."""


def _suite():
    configure_headless_gl()  # MuJoCo reads MUJOCO_GL at import time
    return require("dm_control.suite", "dmc", "dmc")


def all_tasks() -> list[str]:
    """Every "domain-task" name the installed dm_control suite provides."""
    return [f"{d}-{t}" for d, t in _suite().ALL_TASKS]


class DMCFrames(gym.Env):
    """A dm_control task as a gymnasium env of single [3, height, width] RGB frames; info["physics"] is the state."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, domain: str, task: str, *, action_repeat: int, size: tuple[int, int], fast_render: bool) -> None:
        suite = _suite()
        check_dm_control_backend()
        self._env = suite.load(domain, task, task_kwargs={"time_limit": float("inf")})
        self.physics = self._env.physics
        if fast_render:
            # Visual-only model fields; must change before the first render creates the GL context,
            # which reads the multisample count.
            model = self.physics.model
            model.vis.quality.offsamples = 0
            model.light_castshadow[:] = False
            model.mat_reflectance[:] = 0.0
        self.repeat = action_repeat
        self.size = size
        """Frame (height, width) in pixels."""
        self.camera = CAMERA.get(domain, 0)
        self._camera = None
        spec = self._env.action_spec()
        # Agents act in [-1, 1]; rescale to the task's bounds where they are finite (lqr has none).
        self._low, self._high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self._scaled = np.isfinite(self._low) & np.isfinite(self._high) & (self._high - self._low < 1e6)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (3, *size), np.uint8)
        self.elapsed_steps = 0
        """Underlying env steps since reset."""

    def _frame(self) -> np.ndarray:
        if self._camera is None:
            # One camera for the env's lifetime: physics.render() would rebuild the scene every frame.
            from dm_control.mujoco import Camera

            self._camera = Camera(self.physics, height=self.size[0], width=self.size[1], camera_id=self.camera)
        image = self._camera.render()
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def _info(self) -> dict[str, Any]:
        return {"physics": np.array(self.physics.get_state(), dtype=np.float64)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)  # the task's RandomState draws the initial state
        self._env.reset()
        self.elapsed_steps = 0
        return self._frame(), self._info()

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64).reshape(self.action_space.shape), -1.0, 1.0)
        action = np.where(self._scaled, self._low + (action + 1.0) * 0.5 * (self._high - self._low), action)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.repeat):
            timestep = self._env.step(action)
            self.elapsed_steps += 1
            reward += timestep.reward or 0.0
            # With dm_control's time limit off, last() only comes from the task: discount 0 is a true terminal.
            terminated = bool(timestep.last() and timestep.discount == 0)
            truncated = bool(not terminated and (timestep.last() or self.elapsed_steps >= TIME_LIMIT))
            if terminated or truncated:
                break
        return self._frame(), reward, terminated, truncated, self._info()

    def close(self) -> None:
        self.physics.free()


def build_dmc(name: str, *, action_repeat: int | None, size: tuple[int, int], fast_render: bool) -> Built:
    tasks = all_tasks()
    if name not in tasks:
        raise unknown("dmc task", name, tasks, example="dmc:cartpole-swingup")
    domain, task = name.split("-")
    repeat = action_repeat or DEFAULT_ACTION_REPEAT.get(domain, OTHER_ACTION_REPEAT)
    env = DMCFrames(domain, task, action_repeat=repeat, size=size, fast_render=fast_render)
    physics_dim = int(env.physics.get_state().shape[0])
    return Built(env, 3, repeat, physics_dim, math.ceil(TIME_LIMIT / repeat))
