"""Atari 2600 games from pixels ("atari:<Game>"), single env and threaded vector env.

Preprocessing follows the paper's PPO setting: 4 emulator frames per agent step with the max over the
last two, 84 x 84 grey, 4 stacked frames, sticky actions 0.25, no episodic-life resets, up to 30 no-ops
and FIRE at reset, episodes capped at 108000 frames (truncated); game over is terminated. Rewards are
raw (the agent clips them for learning, so the logged score stays the game score).

The single env drives gymnasium's ALE v5 env at frameskip 1 and does the skipping here; the vector env
is ALE's C++ AtariVectorEnv. Both resize with area interpolation and reset the same way, so their
frames agree up to +-1 rounding (tests compare them). The single env counts the 108000-frame cap in
agent steps x frameskip, like the vector env, so reset no-ops do not shorten an episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from atcrl.envs.errors import require, unknown
from atcrl.envs.meta import Built
from atcrl.envs.wrappers import resize_chw

STICKY_ACTION_PROB = 0.25
NOOP_MAX = 30
MAX_EPISODE_FRAMES = 108_000
DEFAULT_FRAMESKIP = 4
DEFAULT_STACK = 4
_NO_SINGLE_PLAYER = {"combat", "joust", "maze_craze", "warlords"}  # ROMs without a v5 env


def _ale():
    return require("ale_py", "atari", "atari")


def game_names() -> dict[str, str]:
    """Game name (PascalCase, as in "atari:MsPacman") -> ALE ROM id ("ms_pacman")."""
    ale_py = _ale()
    roms = [r for r in ale_py.roms.get_all_rom_ids() if r not in _NO_SINGLE_PLAYER]
    return {r.title().replace("_", ""): r for r in roms}


def resolve_game(name: str) -> tuple[str, str]:
    """(PascalCase name, ROM id) for a game given as "Pong" or "pong"; ValueError with suggestions otherwise."""
    games = game_names()
    if name in games:
        return name, games[name]
    by_rom = {rom: pascal for pascal, rom in games.items()}
    if name in by_rom:
        return by_rom[name], name
    raise unknown("Atari game", name, games, example="atari:Pong")


class AtariFrames(gym.Wrapper):
    """ALE v5 at frameskip 1 -> agent steps of `frameskip` frames, giving single grey [1, height, width] frames."""

    def __init__(self, env: gym.Env, *, frameskip: int, size: tuple[int, int], noop_max: int = NOOP_MAX,
                 max_episode_frames: int = MAX_EPISODE_FRAMES) -> None:
        super().__init__(env)
        if frameskip < 1:
            raise ValueError(f"action_repeat (frame skip) must be >= 1, got {frameskip}")
        ale_py = _ale()
        self.ale = env.unwrapped.ale
        self._action_set = self.ale.getMinimalActionSet()
        self._fire = ale_py.Action.FIRE in self._action_set
        self._noop = ale_py.Action.NOOP
        self._fire_action = ale_py.Action.FIRE
        self.frameskip = frameskip
        self.noop_max = noop_max
        self.max_steps = max_episode_frames // frameskip
        self.size = size
        self._screens = np.zeros((2, 210, 160), np.uint8)
        self._steps = 0
        self.observation_space = gym.spaces.Box(0, 255, (1, *size), np.uint8)

    def _frame(self, screen: np.ndarray) -> np.ndarray:
        return resize_chw(screen[None], *self.size)

    def _info(self) -> dict[str, Any]:
        return {"lives": self.ale.lives(), "episode_frame_number": self.ale.getEpisodeFrameNumber()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.env.reset(seed=seed, options=options)
        # Up to noop_max - 1 reset actions, the FIRE press counting as one: the same draw as ALE's
        # vector env (measured on ale-py 0.12), so single and vector envs start episodes alike.
        noops = 0
        if self.noop_max > 0:
            noops = int(self.env.unwrapped.np_random.integers(0, self.noop_max)) - int(self._fire)
        for _ in range(noops):
            self.ale.act(self._noop)
            if self.ale.game_over(with_truncation=False):
                self.ale.reset_game()
        if self._fire:
            self.ale.act(self._fire_action)
        self._steps = 0
        return self._frame(self.ale.getScreenGrayscale()), self._info()

    def step(self, action):
        action_id = self._action_set[int(action)]
        reward, game_over = 0.0, False
        for i in range(self.frameskip):
            reward += self.ale.act(action_id)
            if i >= self.frameskip - 2:
                self.ale.getScreenGrayscale(self._screens[i - self.frameskip + 2])
            game_over = self.ale.game_over(with_truncation=False)
            if game_over:
                if i < self.frameskip - 1:  # ended early: the last screen is all there is to show
                    self.ale.getScreenGrayscale(self._screens[1])
                    self._screens[0] = self._screens[1]
                break
        screen = self._screens.max(axis=0) if self.frameskip > 1 else self._screens[1]
        self._steps += 1
        truncated = not game_over and self._steps >= self.max_steps
        return self._frame(screen), reward, game_over, truncated, self._info()


def build_atari(name: str, *, action_repeat: int | None, size: tuple[int, int], fast_render: bool) -> Built:
    """fast_render is ignored: Atari frames cost nothing to render."""
    ale_py = _ale()
    pascal, _ = resolve_game(name)
    gym.register_envs(ale_py)
    repeat = action_repeat or DEFAULT_FRAMESKIP
    base = gym.make(f"ALE/{pascal}-v5", obs_type="grayscale", frameskip=1,
                    repeat_action_probability=STICKY_ACTION_PROB, full_action_space=False,
                    max_num_frames_per_episode=None, disable_env_checker=True)
    env = AtariFrames(base, frameskip=repeat, size=size)
    return Built(env, DEFAULT_STACK, repeat, None, env.max_steps)


class AtariVectorFrames(gym.vector.VectorWrapper):
    """Frame stacking and gymnasium's SAME_STEP outputs on top of ALE's vector env (run with stack_num=1).

    ALE 0.12 pads a fresh episode's stack with black frames; stacking here pads by repeating the first
    frame instead, as the single env and the replay do. ALE reports final frames as one dense array;
    gymnasium uses an object array with None for envs that did not finish, plus "_final_obs",
    "final_info" and "_final_info". ALE does not report the final step's own infos (its info already
    describes the new episode), so final_info is empty. Rewards become float32; actions may be any
    integer array-like. One difference from the single env remains: on game over ALE's final frame
    repeats the previous one (it does not grab the screen after the game ends), while the single env
    shows the last screen; non-final frames agree up to resize rounding.
    """

    def __init__(self, env: gym.vector.VectorEnv, k: int) -> None:
        super().__init__(env)
        _, h, w = env.single_observation_space.shape
        self.k = k
        self.single_observation_space = gym.spaces.Box(0, 255, (k, h, w), np.uint8)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self._stack = np.zeros((self.num_envs, k, h, w), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        frames, info = self.env.reset(seed=seed, options=options)
        mask = (options or {}).get("reset_mask", np.ones(self.num_envs, bool))
        self._stack[mask] = frames[mask]  # broadcasts the single frame over all k slots
        return self._stack.copy(), info

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        frames, rewards, terminated, truncated, info = self.env.step(actions)
        done = np.logical_or(terminated, truncated)
        info = dict(info)
        last_frames = info.pop("final_obs", None)
        stepped = np.concatenate([self._stack[:, 1:], frames], axis=1)
        if done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = np.concatenate([self._stack[i, 1:], last_frames[i]], axis=0)
                stepped[i] = frames[i]  # the frame returned on a done step starts the next episode
            info.update(final_obs=final_obs, _final_obs=done.copy(), final_info={}, _final_info=done.copy())
        self._stack = stepped
        return stepped.copy(), rewards.astype(np.float32), terminated, truncated, info


def make_atari_vector(name: str, num_envs: int, *, frame_stack: int | None, action_repeat: int | None,
                      size: tuple[int, int], num_threads: int | None) -> tuple[gym.vector.VectorEnv, int, int]:
    """ALE's threaded vector env with the paper's settings; returns (env, frame_stack, action_repeat)."""
    _ale()
    from ale_py.vector_env import AtariVectorEnv

    _, rom = resolve_game(name)
    stack = frame_stack or DEFAULT_STACK
    repeat = action_repeat or DEFAULT_FRAMESKIP
    vec = AtariVectorEnv(
        rom, num_envs, num_threads=num_threads or 0, repeat_action_probability=STICKY_ACTION_PROB,
        reward_clipping=False, episodic_life=False, noop_max=NOOP_MAX, use_fire_reset=True,
        stack_num=1, frameskip=repeat, maxpool=True, img_height=size[0], img_width=size[1],
        max_num_frames_per_episode=MAX_EPISODE_FRAMES, autoreset_mode=AutoresetMode.SAME_STEP,
    )
    return AtariVectorFrames(vec, stack), stack, repeat
