"""Any registered gymnasium env with image observations ("gym:<id>"), e.g. gym:MiniWorld-OneRoom-v0.

Observations (HxW, HxWxC or CxHxW uint8) become [C, height, width] frames at the requested size; envs whose
observations are not images are refused with an error, since every atcrl encoder reads pixels. MiniWorld
envs render directly at the requested size and are imported with headless EGL rendering.
"""

from __future__ import annotations

import math

import gymnasium as gym

from atcrl.envs.errors import require, unknown
from atcrl.envs.gl import configure_pyglet_headless
from atcrl.envs.meta import Built
from atcrl.envs.wrappers import ActionRepeat, PixelFrames


def _register_for(env_id: str) -> None:
    """Import the optional package that registers `env_id`'s namespace (gymnasium does not know them)."""
    if env_id.startswith("MiniWorld"):
        configure_pyglet_headless()  # pyglet picks its GL platform when miniworld imports it
        require("miniworld", "3d", "gym:MiniWorld")
    elif env_id.startswith("ALE/"):
        gym.register_envs(require("ale_py", "atari", "gym:ALE"))


def _episode_limit(env: gym.Env) -> int | None:
    if env.spec is not None and env.spec.max_episode_steps:
        return env.spec.max_episode_steps
    limit = getattr(env.unwrapped, "max_episode_steps", None)  # MiniWorld counts its own steps
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def build_gym(name: str, *, action_repeat: int | None, size: tuple[int, int], fast_render: bool) -> Built:
    """fast_render is ignored: gymnasium envs offer no common rendering-quality switch."""
    _register_for(name)
    if name not in gym.registry:
        raise unknown("gymnasium env id", name, gym.registry, example="gym:MiniWorld-OneRoom-v0")
    height, width = size
    kwargs = {"obs_width": width, "obs_height": height} if name.startswith("MiniWorld") else {}
    base = gym.make(name, disable_env_checker=True, **kwargs)
    try:
        env: gym.Env = PixelFrames(base, size)
    except ValueError as err:
        base.close()
        raise ValueError(f"gym:{name} cannot be used: {err}") from None
    repeat = action_repeat or 1
    if repeat > 1:
        env = ActionRepeat(env, repeat)
    stack = 4 if env.observation_space.shape[0] == 1 else 3
    limit = _episode_limit(base)
    return Built(env, stack, repeat, None, math.ceil(limit / repeat) if limit else None)
