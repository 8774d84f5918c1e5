"""miniworld:<Task>: MiniWorld first-person 3D tasks shaped like the DeepMind Lab setting (the DMLab stand-in).

DeepMind Lab needs a bazel build, so this family gives its observation and control shape with MiniWorld,
which installs with pip: RGB frames of 72x96 (height x width) by default, each agent action repeated 4
times, no frame stacking (the DMLab agent is recurrent), discrete actions; info["physics"] is the agent's
pose (x, z, cos and sin of the heading), which DeepMind Lab does not give. Names are MiniWorld's env ids
without "MiniWorld-" and "-v0": miniworld:FourRooms is MiniWorld-FourRooms-v0. Every registered MiniWorld
task works; STAND_INS says which DeepMind Lab level each of the chosen ones stands for.

What differs from DeepMind Lab (docs/reference-settings.md, "DMLab environments", and D10): the action
set is each MiniWorld task's own (3 actions: turn left, turn right, forward; 5 with pick-up tasks) instead
of DMLab's 9, turns and steps are MiniWorld's (15 degrees, 0.15 m per underlying step), an episode ends
when the goal is reached (DMLab respawns the agent and keeps counting goals until the clock runs out), the
reward is MiniWorld's (1 - 0.2 * t / T for the goal, where DMLab gives 10 per goal; PickupObjects: 1 per
object) and the episode limits are MiniWorld's own, counted in underlying steps (FourRooms 250, i.e. 63
agent steps).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np

from atcrl.envs.errors import require, unknown
from atcrl.envs.gl import configure_pyglet_headless
from atcrl.envs.gym_pixels import build_gym
from atcrl.envs.meta import Built

LAB_FRAME = (72, 96)
"""DeepMind Lab's frame in the reference setting, (height, width)."""
LAB_ACTION_REPEAT = 4
"""Underlying steps per agent step (the reference's DMLab action repeat)."""
LAB_FRAME_STACK = 1
"""Frames per observation: the DMLab agent is recurrent and needs no stack."""

STAND_INS: dict[str, str] = {
    "FourRooms": "explore_goal_locations_small: find a goal placed at random in a small layout of rooms",
    "MazeS3": "explore_goal_locations_small: a goal at random in a small (3x3) random maze",
    "Maze": "explore_goal_locations_large: a goal at random in a large (8x8) random maze",
    "PickupObjects": "explore_object_locations: walk to objects placed at random and pick them up",
    "OneRoom": "none (a sanity check): a goal in one open room",
}
"""The miniworld tasks chosen as DeepMind Lab stand-ins, and the level (and what the task asks) each maps to.
DeepMind Lab's lasertag and watermaze levels have no MiniWorld counterpart."""


POSE_DIM = 4
"""Length of info["physics"]: the agent's floor position (x, z) and heading (cos, sin)."""


class AgentPose(gym.Wrapper):
    """Adds the MiniWorld agent's pose after each reset and step as info["physics"] (for linear probes)."""

    def _pose(self, info: dict[str, Any]) -> dict[str, Any]:
        agent = self.env.unwrapped.agent
        heading = float(agent.dir)
        pose = [float(agent.pos[0]), float(agent.pos[2]), math.cos(heading), math.sin(heading)]
        return {**info, "physics": np.array(pose, np.float64)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._pose(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._pose(info)


def _env_id(name: str) -> str:
    return f"MiniWorld-{name}-v0"


def miniworld_tasks() -> list[str]:
    """Every registered MiniWorld task, by its miniworld: name."""
    configure_pyglet_headless()  # pyglet picks its GL platform when miniworld imports it
    require("miniworld", "3d", "miniworld")
    return sorted(key[len("MiniWorld-"):-len("-v0")] for key in gym.registry
                  if key.startswith("MiniWorld-") and key.endswith("-v0"))


def build_miniworld(name: str, *, action_repeat: int | None, size: tuple[int, int], fast_render: bool) -> Built:
    """A MiniWorld task at the DMLab setting's frame, repeat and stack; fast_render is ignored."""
    tasks = miniworld_tasks()
    if name not in tasks:
        raise unknown("miniworld task", name, tasks, example="miniworld:FourRooms")
    built = build_gym(_env_id(name), action_repeat=action_repeat or LAB_ACTION_REPEAT, size=size,
                      fast_render=fast_render)
    return dataclasses.replace(built, env=AgentPose(built.env), frame_stack=LAB_FRAME_STACK,
                               physics_dim=POSE_DIM)
