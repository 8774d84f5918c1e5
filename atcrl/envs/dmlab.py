"""dmlab:<level>: DeepMind Lab at the reference setting, for machines that have its `deepmind_lab` module.

DeepMind Lab is not on PyPI: it builds from source with bazel, which makes a `deepmind_lab` Python package.
Without it every dmlab: spec fails with one line saying so; the miniworld: family (atcrl.envs.lab3d) is the
stand-in that installs with pip.

The setting: RGB frames of 72x96 (height x width), each action repeated 4 times (DeepMind Lab's own
num_steps, rewards summed), no frame stacking, and the 9 discrete actions of DMLAB_ACTIONS. A level name
without "/" is a DMLab-30 level (dmlab:explore_goal_locations_small loads
contributed/dmlab30/explore_goal_locations_small); a name with "/" is a level path used as given. Episodes
end on the level's clock, which DeepMind Lab does not tell apart from other ends, so an end is reported as
a truncation (the return bootstraps, as for any time limit).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from atcrl.envs.errors import require
from atcrl.envs.lab3d import LAB_ACTION_REPEAT, LAB_FRAME_STACK
from atcrl.envs.meta import Built

DMLAB_INSTALL = ("build DeepMind Lab's deepmind_lab package from source with bazel "
                 "(not on PyPI; miniworld: is the pip stand-in)")
"""How to get `deepmind_lab` (no atcrl extra can: it is not on PyPI)."""

LOOK = 20
"""Pixels per frame of a look action."""
DMLAB_ACTIONS: tuple[tuple[str, dict[str, int]], ...] = (
    ("forward", {"MOVE_BACK_FORWARD": 1}),
    ("backward", {"MOVE_BACK_FORWARD": -1}),
    ("strafe left", {"STRAFE_LEFT_RIGHT": -1}),
    ("strafe right", {"STRAFE_LEFT_RIGHT": 1}),
    ("look left", {"LOOK_LEFT_RIGHT_PIXELS_PER_FRAME": -LOOK}),
    ("look right", {"LOOK_LEFT_RIGHT_PIXELS_PER_FRAME": LOOK}),
    ("forward + look left", {"MOVE_BACK_FORWARD": 1, "LOOK_LEFT_RIGHT_PIXELS_PER_FRAME": -LOOK}),
    ("forward + look right", {"MOVE_BACK_FORWARD": 1, "LOOK_LEFT_RIGHT_PIXELS_PER_FRAME": LOOK}),
    ("fire", {"FIRE": 1}),
)
"""The reference's discrete action set: each action sets these DeepMind Lab action-spec entries (the rest 0)."""
OBSERVATION = "RGB_INTERLEAVED"


def level_path(name: str) -> str:
    """The DeepMind Lab level a dmlab: name loads (DMLab-30 levels by their short name)."""
    return name if "/" in name else f"contributed/dmlab30/{name}"


def action_table(action_spec: list[dict[str, Any]]) -> np.ndarray:
    """DMLAB_ACTIONS as int32 rows in the order of the Lab's own action spec; ValueError for a missing entry."""
    names = [entry["name"] for entry in action_spec]
    table = np.zeros((len(DMLAB_ACTIONS), len(names)), np.intc)
    for row, (label, entries) in enumerate(DMLAB_ACTIONS):
        for key, value in entries.items():
            if key not in names:
                raise ValueError(f"this DeepMind Lab has no action {key!r} (needed for {label!r}); it has {names}")
            table[row, names.index(key)] = value
    return table


class DMLabFrames(gym.Env):
    """A DeepMind Lab level as a gymnasium env of single [3, height, width] RGB frames, discrete actions."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, lab_module: Any, level: str, *, size: tuple[int, int], action_repeat: int) -> None:
        height, width = size
        self._lab = lab_module.Lab(level, [OBSERVATION], config={"width": str(width), "height": str(height)},
                                   renderer="software")
        self._actions = action_table(self._lab.action_spec())
        self.repeat = action_repeat
        self.observation_space = gym.spaces.Box(0, 255, (3, height, width), np.uint8)
        self.action_space = gym.spaces.Discrete(len(DMLAB_ACTIONS))
        self._last = np.zeros(self.observation_space.shape, np.uint8)

    def _frame(self) -> np.ndarray:
        self._last = np.ascontiguousarray(np.moveaxis(self._lab.observations()[OBSERVATION], -1, 0))
        return self._last

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._lab.reset(seed=int(self.np_random.integers(2**31 - 1)))
        return self._frame(), {}

    def step(self, action):
        reward = float(self._lab.step(self._actions[int(action)], num_steps=self.repeat))
        running = self._lab.is_running()
        frame = self._frame() if running else self._last  # a finished level has no observation left
        return frame, reward, False, not running, {}

    def close(self) -> None:
        self._lab.close()


def build_dmlab(name: str, *, action_repeat: int | None, size: tuple[int, int], fast_render: bool) -> Built:
    """A DeepMind Lab level at the reference setting; fast_render is ignored (software rendering)."""
    lab_module = require("deepmind_lab", None, "dmlab", install=DMLAB_INSTALL)
    repeat = action_repeat or LAB_ACTION_REPEAT
    env = DMLabFrames(lab_module, level_path(name), size=size, action_repeat=repeat)
    return Built(env, LAB_FRAME_STACK, repeat, None, None)
