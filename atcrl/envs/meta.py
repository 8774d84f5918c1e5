"""What a made environment is: family, frame layout, repeat, action type, physics size, episode bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym


@dataclass(frozen=True)
class EnvMeta:
    spec: str
    """The spec string the env was made from, e.g. "dmc:cartpole-swingup"."""
    family: str
    """"dmc", "atari", "gym" or "tiny"."""
    frame_channels: int
    """Channels of one frame (3 RGB, 1 grey); the observation has frame_channels * frame_stack channels."""
    frame_stack: int
    """Frames stacked along the channel axis, oldest first."""
    action_repeat: int
    """Underlying env steps per agent step (Atari: emulator frames per agent step)."""
    discrete: bool
    """True for a Discrete action space, False for a Box in [-1, 1]."""
    physics_dim: int | None
    """Length of info["physics"] (low-dimensional state of the current frame), None when not provided."""
    max_episode_steps: int | None
    """Most agent steps an episode can last (time limit, or the natural length), None when unbounded."""


class WithMeta(gym.Wrapper):
    """Outermost wrapper of every made env: carries its EnvMeta and applies the make-time seed.

    The seed given to make_env is used by the first reset that does not pass its own, so
    ``make_env(spec, seed=s)`` followed by plain ``reset()`` calls is reproducible.
    """

    def __init__(self, env: gym.Env, meta: EnvMeta, seed: int | None) -> None:
        super().__init__(env)
        self.atcrl_meta = meta
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def env_meta(env: gym.Env | gym.vector.VectorEnv) -> EnvMeta:
    """The EnvMeta of an env (or vector env) made by make_env / make_vec_env."""
    meta = getattr(env, "atcrl_meta", None)
    if meta is None and isinstance(env, gym.Env):
        try:
            meta = env.get_wrapper_attr("atcrl_meta")
        except AttributeError:
            meta = None
    if not isinstance(meta, EnvMeta):
        raise TypeError(f"{env!r} was not made by atcrl.envs.make_env / make_vec_env, so it has no EnvMeta")
    return meta


@dataclass
class Built:
    """What a family builder hands to make_env: a single-frame env plus the facts make_env cannot see."""

    env: gym.Env
    """Env whose observations are single uint8 frames [C, H, W], action repeat already applied."""
    frame_stack: int
    """The family's default number of stacked frames."""
    action_repeat: int
    """The action repeat in effect."""
    physics_dim: int | None
    """Length of info["physics"], or None."""
    max_episode_steps: int | None
    """Most agent steps per episode, or None."""
