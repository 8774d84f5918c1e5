"""Atari: the paper's preprocessing, episode ends, unclipped rewards, and single/vector env agreement."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from atcrl.envs import env_meta, make_env, make_vec_env

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py missing")


def test_settings_follow_the_paper():
    env = make_env("atari:Pong", seed=0)
    meta = env_meta(env)
    assert (meta.frame_channels, meta.frame_stack, meta.action_repeat) == (1, 4, 4)
    assert meta.discrete and meta.physics_dim is None
    assert meta.max_episode_steps == 108_000 // 4
    ale = env.unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.observation_space.shape == (4, 84, 84)


def test_game_over_terminates_and_frame_cap_truncates():
    env = make_env("atari:Pong", seed=1, image_size=16)
    env.reset()
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):  # random Pong loses 21 points in ~1000 agent steps
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    assert terminated and not truncated and steps < 27_000
    assert env.unwrapped.ale.game_over()

    from atcrl.envs.atari import AtariFrames
    from atcrl.envs.wrappers import FrameStack

    base = gym.make("ALE/Pong-v5", obs_type="grayscale", frameskip=1, disable_env_checker=True)
    capped = FrameStack(AtariFrames(base, frameskip=4, size=(16, 16), max_episode_frames=40), 4)
    capped.reset(seed=0)
    flags = [capped.step(0)[2:4] for _ in range(10)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_rewards_are_not_clipped():
    """Space Invaders scores 5..30 per invader; the env must pass them through (the agent clips)."""
    for make in (lambda: make_env("atari:SpaceInvaders", seed=0, image_size=16),
                 lambda: make_vec_env("atari:SpaceInvaders", 2, seed=0, image_size=16, num_threads=1)):
        env = make()
        env.reset()
        env.action_space.seed(0)
        best = 0.0
        for _ in range(400):
            best = max(best, float(np.max(env.step(env.action_space.sample())[1])))
            if best > 1:
                break
        assert best >= 5


def test_game_names_accept_rom_ids_and_suggest_on_typos():
    assert env_meta(make_env("atari:ms_pacman", image_size=16)).spec == "atari:ms_pacman"
    with pytest.raises(ValueError, match="Pong"):
        make_env("atari:Pnog")
    with pytest.raises(ValueError, match="MsPacman"):
        make_env("atari:MsPacMan")


def _paired_envs(game: str, rom: str, seed: int):
    """Single and vector env with no randomness left (no sticky actions, no random no-ops), same ROM seed."""
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    from atcrl.envs.atari import AtariFrames, AtariVectorFrames
    from atcrl.envs.wrappers import FrameStack

    base = gym.make(f"ALE/{game}-v5", obs_type="grayscale", frameskip=1, repeat_action_probability=0.0,
                    max_num_frames_per_episode=None, disable_env_checker=True)
    single = FrameStack(AtariFrames(base, frameskip=4, size=(84, 84), noop_max=1), 4)
    single.reset(seed=0)
    base.unwrapped.ale.setInt("random_seed", seed)  # the vector env seeds the emulator directly
    base.unwrapped.load_game()
    vector = AtariVectorFrames(AtariVectorEnv(
        rom, 1, num_threads=1, repeat_action_probability=0.0, reward_clipping=False, noop_max=1,
        use_fire_reset=True, stack_num=1, frameskip=4, maxpool=True, autoreset_mode=AutoresetMode.SAME_STEP), 4)
    return single, vector


@pytest.mark.parametrize("game,rom", [("Breakout", "breakout"), ("MsPacman", "ms_pacman")])
def test_single_and_vector_env_show_the_same_frames(game, rom):
    """Same emulator, same actions: rewards identical and frames equal up to resize rounding (+-1)."""
    single, vector = _paired_envs(game, rom, seed=7)
    a, _ = single.reset()
    b, _ = vector.reset(seed=7)
    assert np.abs(a.astype(int) - b[0]).max() <= 1
    rng = np.random.default_rng(0)
    off = []
    for _ in range(150):
        action = int(rng.integers(single.action_space.n))
        a, ra, ta, _, _ = single.step(action)
        b, rb, tb, _, _ = vector.step([action])
        assert ra == rb[0] and ta == tb[0]
        if ta:
            break
        diff = np.abs(a.astype(int) - b[0])
        assert diff.max() <= 1
        off.append((diff > 0).mean())
    assert len(off) > 50 and np.mean(off) < 0.005


def test_vector_env_stacks_like_the_single_env_and_autoresets_same_step():
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    from atcrl.envs.atari import AtariVectorFrames

    vec = make_vec_env("atari:Pong", 2, seed=0, num_threads=1)
    obs, _ = vec.reset()
    assert obs.shape == (2, 4, 84, 84)
    assert all((o == o[0]).all() for o in obs)  # reset pads with the first frame, not black frames
    nxt, reward, *_ = vec.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(nxt[:, :3], obs[:, 1:])
    assert reward.dtype == np.float32

    # A 40-frame cap makes every episode end after 10 agent steps; moving the Breakout paddle left and
    # right changes every frame, so a stale final frame would show.
    short = AtariVectorFrames(AtariVectorEnv(
        "breakout", 2, num_threads=1, max_num_frames_per_episode=40, stack_num=1,
        autoreset_mode=AutoresetMode.SAME_STEP), 4)
    obs, _ = short.reset(seed=0)
    for t in range(10):
        previous = obs
        obs, _, terminated, truncated, info = short.step([2 + t % 2, 3 - t % 2])
        assert truncated.all() == (t == 9) and not terminated.any()
    assert info["_final_obs"].all() and info["_final_info"].all()
    for i in range(2):
        np.testing.assert_array_equal(info["final_obs"][i][:3], previous[i][1:])
        assert not np.array_equal(info["final_obs"][i][3], previous[i][3])
        assert (obs[i] == obs[i][0]).all()
