"""Spec strings -> environments: make_env / make_vec_env for every family.

A spec is "<family>:<name>": dmc:cartpole-swingup, atari:Pong, gym:MiniWorld-OneRoom-v0,
miniworld:FourRooms, dmlab:explore_goal_locations_small, tiny:point. Each family builder returns single
channels-first frames; frame stacking, seeding and the EnvMeta tag are added here in one place, so all
families share one observation layout.

Frame sizes: ``image_size`` is None (the family's own frame: 84x84, or 72x96 for the DeepMind Lab-shaped
families), an int (a square frame of that side) or a (height, width) pair.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from atcrl.envs.atari import MAX_EPISODE_FRAMES, build_atari, make_atari_vector
from atcrl.envs.dmc import build_dmc
from atcrl.envs.dmlab import DMLAB_INSTALL, build_dmlab
from atcrl.envs.errors import pip_command, unknown
from atcrl.envs.gym_pixels import build_gym
from atcrl.envs.lab3d import LAB_FRAME, build_miniworld
from atcrl.envs.meta import Built, EnvMeta, WithMeta
from atcrl.envs.tiny import build_tiny
from atcrl.envs.wrappers import FrameStack

ImageSize = int | tuple[int, int] | None
"""A requested frame size: None (the family's default frame), a square side, or (height, width)."""

DEFAULT_FRAME = (84, 84)


@dataclass(frozen=True)
class Family:
    build: Callable[..., Built]
    """Builder: (name, *, action_repeat, size=(height, width), fast_render) -> Built."""
    example: str
    """A spec that works when the family's dependency is installed."""
    module: str | None
    """Optional package the family needs (None: always available)."""
    install: str | None
    """How to install `module` (a pip command, or where to get it when pip cannot)."""
    frame: tuple[int, int] = DEFAULT_FRAME
    """The family's frame (height, width) when image_size is None."""


FAMILIES: dict[str, Family] = {
    "dmc": Family(build_dmc, "dmc:cartpole-swingup", "dm_control", pip_command("dmc")),
    "atari": Family(build_atari, "atari:Pong", "ale_py", pip_command("atari")),
    "gym": Family(build_gym, "gym:MiniWorld-OneRoom-v0", "miniworld", pip_command("3d")),
    "miniworld": Family(build_miniworld, "miniworld:FourRooms", "miniworld", pip_command("3d"), LAB_FRAME),
    "dmlab": Family(build_dmlab, "dmlab:explore_goal_locations_small", "deepmind_lab", DMLAB_INSTALL,
                    LAB_FRAME),
    "tiny": Family(build_tiny, "tiny:point", None, None),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split "family:name"; ValueError naming close families for anything else."""
    family, sep, name = spec.partition(":")
    examples = ", ".join(f.example for f in FAMILIES.values())
    if not spec.strip():
        raise ValueError(f"the env spec is empty; give one such as {examples} (`atcrl envs` lists the families)")
    if not sep or not name:
        raise ValueError(f"env spec {spec!r} must look like 'family:name', e.g. {examples}")
    if family not in FAMILIES:
        raise unknown("env family", family, FAMILIES, example=examples)
    return family, name


def frame_size(family: str, image_size: ImageSize) -> tuple[int, int]:
    """The (height, width) a family renders for `image_size`; ValueError for a size that is not one."""
    if image_size is None:
        return FAMILIES[family].frame
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size: tuple[Any, ...] = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ValueError("image_size must be None, one int (a square side) or (height, width), "
                         f"got {image_size!r}")
    if not all(isinstance(side, int) and not isinstance(side, bool) and side >= 8 for side in size):
        raise ValueError(f"image_size sides must be ints >= 8 pixels, got {image_size!r}")
    return int(size[0]), int(size[1])


def _check_args(frame_stack: int | None, action_repeat: int | None) -> None:
    for name, value in (("frame_stack", frame_stack), ("action_repeat", action_repeat)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 (or None for the family default), got {value}")


def make_env(spec: str, *, seed: int | None = None, frame_stack: int | None = None,
             action_repeat: int | None = None, image_size: ImageSize = None,
             fast_render: bool = False) -> gym.Env:
    """A pixel env with uint8 observations [frame_stack * C, height, width], oldest frame first.

    image_size: None = the family's frame (FAMILIES[family].frame), an int = a square frame, or a
    (height, width) pair. frame_stack / action_repeat default per family (see EnvMeta via env_meta(env)).
    `seed` seeds the first reset that passes none, so the whole run is reproducible. `fast_render` (DMC
    only) turns off shadows, reflections and multisampling: faster, but the pixels differ from the default
    rendering.
    """
    family, name = parse_spec(spec)
    size = frame_size(family, image_size)
    _check_args(frame_stack, action_repeat)
    built = FAMILIES[family].build(name, action_repeat=action_repeat, size=size, fast_render=fast_render)
    stack = frame_stack or built.frame_stack
    env = FrameStack(built.env, stack)
    meta = EnvMeta(
        spec=f"{family}:{name}", family=family, frame_channels=built.env.observation_space.shape[0],
        frame_stack=stack, action_repeat=built.action_repeat,
        discrete=isinstance(env.action_space, gym.spaces.Discrete), physics_dim=built.physics_dim,
        max_episode_steps=built.max_episode_steps,
    )
    return WithMeta(env, meta, seed)


class _VecWithMeta(gym.vector.VectorWrapper):
    """Carries the EnvMeta of a vector env and seeds its first reset (env i gets seed + i)."""

    def __init__(self, env: gym.vector.VectorEnv, meta: EnvMeta, seed: int | None) -> None:
        super().__init__(env)
        self.atcrl_meta = meta
        self._pending_seed = seed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def make_vec_env(spec: str, num_envs: int, *, seed: int | None = None, asynchronous: bool = False,
                 frame_stack: int | None = None, action_repeat: int | None = None, image_size: ImageSize = None,
                 fast_render: bool = False, num_threads: int | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of make_env(spec) with gymnasium's SAME_STEP autoreset for every family.

    On a step that ends an episode the returned observation already starts the next one; the last
    observation is in info["final_obs"][i] (mask info["_final_obs"]) and that step's infos in
    info["final_info"]. Atari uses ALE's threaded C++ vector env (`num_threads`, default one per core
    up to num_envs; `asynchronous` is ignored); other families use gymnasium's Sync/AsyncVectorEnv.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    family, name = parse_spec(spec)
    size = frame_size(family, image_size)
    _check_args(frame_stack, action_repeat)
    if family == "atari":
        threads = num_threads or min(num_envs, os.cpu_count() or 1)
        vec, stack, repeat = make_atari_vector(name, num_envs, frame_stack=frame_stack, action_repeat=action_repeat,
                                               size=size, num_threads=threads)
        meta = EnvMeta(spec=f"atari:{name}", family="atari", frame_channels=1, frame_stack=stack,
                       action_repeat=repeat, discrete=True, physics_dim=None,
                       max_episode_steps=MAX_EPISODE_FRAMES // repeat)
        return _VecWithMeta(vec, meta, seed)
    make_one = functools.partial(make_env, spec, frame_stack=frame_stack, action_repeat=action_repeat,
                                 image_size=size, fast_render=fast_render)
    if asynchronous:
        # spawn, not fork: children must not inherit the parent's GL/EGL state.
        vec = AsyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    else:
        vec = SyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    return _VecWithMeta(vec, vec.get_attr("atcrl_meta")[0], seed)
