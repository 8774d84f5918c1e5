"""The tiny pixel envs: dynamics, rewards, episode ends, rendering that matches the physics state."""

from __future__ import annotations

import numpy as np
import pytest

from atcrl.envs import env_meta, make_env, make_vec_env
from atcrl.envs.tiny import TinyPoint


def point_pixel_centre(obs: np.ndarray) -> np.ndarray:
    """World (x, y) of the red dot's pixel centroid in the newest RGB frame."""
    frame = obs[-3:].astype(int)
    red = (frame[0] > 200) & (frame[1] < 100)
    rows, cols = np.nonzero(red)
    size = obs.shape[-1]
    return np.array([(cols.mean() + 0.5) / size * 2 - 1, 1 - (rows.mean() + 0.5) / size * 2])


@pytest.mark.parametrize("size", [32, 84])
def test_point_dot_is_drawn_where_physics_says(size):
    env = make_env("tiny:point", seed=0, image_size=size)
    obs, info = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, y = info["physics"][:2]
        if abs(x) < 0.85 and abs(y) < 0.85:  # away from the border the dot is drawn whole
            np.testing.assert_allclose(point_pixel_centre(obs), [x, y], atol=2.5 / size)
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 2))


def test_point_moves_by_the_action_and_reward_is_one_minus_distance():
    env = make_env("tiny:point", seed=1)
    _, info = env.reset()
    start = info["physics"][:2].copy()
    action = np.array([0.5, -0.25], np.float32)
    _, reward, terminated, truncated, info = env.step(action)
    np.testing.assert_allclose(info["physics"][:2], np.clip(start + TinyPoint.speed * action, -1, 1))
    np.testing.assert_allclose(info["physics"][2:], info["physics"][:2] - start)
    assert reward == pytest.approx(1 - np.linalg.norm(info["physics"][:2] - TinyPoint.target))
    assert not terminated and not truncated


def test_point_truncates_after_50_steps_and_repeat_shortens_episodes():
    for repeat, expected in [(1, 50), (2, 25), (3, 17)]:
        env = make_env("tiny:point", seed=0, action_repeat=repeat, image_size=16)
        assert env_meta(env).max_episode_steps == expected
        env.reset()
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            assert not terminated
            done = truncated
        assert steps == expected


def test_point_greedy_policy_beats_random():
    def episode_return(policy) -> float:
        env = make_env("tiny:point", seed=3, image_size=16)
        _, info = env.reset()
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, info = env.step(policy(info["physics"]))
            total, done = total + r, terminated or truncated
        return total

    rng = np.random.default_rng(0)
    greedy = episode_return(lambda p: np.clip((TinyPoint.target - p[:2]) / TinyPoint.speed, -1, 1))
    random = episode_return(lambda p: rng.uniform(-1, 1, 2))
    assert greedy > random + 10


def play_catch(policy, seed: int):
    env = make_env("tiny:catch", seed=seed, image_size=32)
    _, info = env.reset()
    rewards, flags = [], []
    done = False
    while not done:
        _, r, terminated, truncated, info = env.step(policy(info["physics"]))
        rewards.append(r)
        flags.append((terminated, truncated))
        done = terminated or truncated
    return rewards, flags, info["physics"]


def test_catch_tracking_paddle_always_catches_and_episode_terminates():
    for seed in range(8):
        rewards, flags, physics = play_catch(lambda p: int(np.sign(p[0] - p[2])) + 1, seed)
        assert rewards[-1] == 1.0 and all(r == 0.0 for r in rewards[:-1])
        assert flags[-1] == (True, False) and all(f == (False, False) for f in flags[:-1])
        assert len(rewards) == 9 and physics[1] == 9


def test_catch_miss_gives_minus_one():
    # Moving away from the ball, a ball dropped far from where the paddle ends up is missed.
    outcomes = []
    for seed in range(12):
        rewards, _, physics = play_catch(lambda p: 0 if p[0] >= 5 else 2, seed)
        outcomes.append((rewards[-1], abs(physics[0] - physics[2]) <= 1))
    assert all(r == (1.0 if caught else -1.0) for r, caught in outcomes)
    assert any(r == -1.0 for r, _ in outcomes)


def test_catch_frame_shows_ball_and_paddle_where_physics_says():
    env = make_env("tiny:catch", seed=4, image_size=40, frame_stack=1)  # 4 pixels per cell
    obs, info = env.reset()
    for _ in range(5):
        frame = obs[0]
        ball_x, ball_y, paddle_x = info["physics"].astype(int)
        assert frame[ball_y * 4 + 2, ball_x * 4 + 2] == 255
        bottom = frame[9 * 4 + 2, 2::4]
        assert np.flatnonzero(bottom).tolist() == [paddle_x - 1, paddle_x, paddle_x + 1]
        obs, _, _, _, info = env.step(2)


def test_catch_rejects_out_of_range_actions():
    env = make_env("tiny:catch", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="left"):
        env.step(3)


def test_vector_same_step_autoreset_on_catch():
    """On the done step the obs starts the next episode; the last one is in info["final_obs"]."""
    vec = make_vec_env("tiny:catch", 3, seed=0, image_size=20)
    obs, info = vec.reset()
    assert info["physics"].shape == (3, 3)
    previous = obs
    for t in range(9):
        obs, reward, terminated, truncated, info = vec.step(np.array([0, 1, 2]))
        if t < 8:
            assert not terminated.any() and "final_obs" not in info
            previous = obs
    assert terminated.all() and not truncated.any()
    assert info["_final_obs"].tolist() == [True] * 3 and info["_final_info"].all()
    assert set(np.abs(reward)) == {1.0}
    for i in range(3):
        final = info["final_obs"][i]
        assert final.shape == obs.shape[1:]
        np.testing.assert_array_equal(final[:-1], previous[i][1:])  # final stack = previous shifted + new frame
        assert (obs[i] == obs[i][:1]).all()  # the new episode's first obs: k copies of one frame
        assert info["final_info"]["physics"][i][1] == 9  # the ball had landed
        assert info["physics"][i][1] == 0  # and the new ball starts at the top


def test_vector_seed_gives_each_env_its_own_reproducible_start():
    a, _ = make_vec_env("tiny:point", 3, seed=7, image_size=16).reset()
    b, _ = make_vec_env("tiny:point", 3, seed=7, image_size=16).reset()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


def test_async_vector_env_steps_like_the_sync_one():
    kwargs = {"seed": 3, "image_size": 16}
    sync, asyn = make_vec_env("tiny:catch", 2, **kwargs), make_vec_env("tiny:catch", 2, asynchronous=True, **kwargs)
    try:
        a, _ = sync.reset()
        b, _ = asyn.reset()
        np.testing.assert_array_equal(a, b)
        for t in range(10):  # crosses the episode end at step 9
            actions = np.array([t % 3, 2 - t % 3])
            a, ra, ta, _, info_a = sync.step(actions)
            b, rb, tb, _, info_b = asyn.step(actions)
            np.testing.assert_array_equal(a, b)
            assert ra.tolist() == rb.tolist() and ta.tolist() == tb.tolist()
            if ta.any():
                np.testing.assert_array_equal(np.stack(info_a["final_obs"]), np.stack(info_b["final_obs"]))
    finally:
        sync.close()
        asyn.close()


def test_tiny_cue_shows_the_cue_once_and_rewards_only_naming_it_at_the_last_step():
    from atcrl.envs import make_env

    env = make_env("tiny:cue", image_size=8, seed=0)
    for episode in range(6):
        obs, info = env.reset(seed=episode)
        cue = int(info["physics"][0])
        assert np.unique(obs.reshape(3, -1), axis=1).shape[1] == 1  # one colour fills the frame
        assert obs[:, 0, 0].tolist() == [[230, 50, 50], [50, 200, 60]][cue]
        rewards, blanks = [], []
        for t in range(4):
            action = cue if t == 3 and episode % 2 == 0 else (1 - cue if t == 3 else cue)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            blanks.append(obs[:, 0, 0].tolist())
            assert terminated == (t == 3) and not truncated
        assert rewards == [0.0, 0.0, 0.0, float(episode % 2 == 0)]
        assert all(b == blanks[0] for b in blanks)  # the cue is gone after the first frame
