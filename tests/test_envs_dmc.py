"""DeepMind Control from pixels: action repeat, the 1000-step truncation, seeding, physics state, cameras."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from atcrl.envs import env_meta, make_env, make_vec_env

pytestmark = pytest.mark.skipif(importlib.util.find_spec("dm_control") is None, reason="dm_control missing")
SMALL = {"image_size": 24, "fast_render": True}


def test_defaults_follow_the_paper():
    env = make_env("dmc:cartpole-swingup", **SMALL)
    meta = env_meta(env)
    assert (meta.action_repeat, meta.frame_stack, meta.frame_channels) == (8, 3, 3)
    assert meta.max_episode_steps == 125 and meta.physics_dim == 4 and not meta.discrete
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]
    from atcrl.envs.dmc import DEFAULT_ACTION_REPEAT, OTHER_ACTION_REPEAT

    assert DEFAULT_ACTION_REPEAT == {"cartpole": 8, "cheetah": 4, "ball_in_cup": 4, "reacher": 4,
                                     "walker": 2, "finger": 2}
    assert OTHER_ACTION_REPEAT == 4


@pytest.mark.parametrize("repeat", [1, 3, 8])
def test_one_agent_step_advances_physics_by_repeat_control_steps(repeat):
    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=repeat, **SMALL)
    env.reset()
    base = env.unwrapped
    control_dt = base._env.control_timestep()
    for n in (1, 2):
        env.step(env.action_space.sample())
        assert base.physics.data.time == pytest.approx(n * repeat * control_dt)
        assert base.elapsed_steps == n * repeat


def test_rewards_are_summed_over_the_repeat_and_match_dm_control():
    """Same seed and actions in raw dm_control: summed rewards and physics states agree exactly."""
    from dm_control import suite

    repeat = 4
    env = make_env("dmc:cartpole-swingup", seed=5, action_repeat=repeat, **SMALL)
    _, info = env.reset()
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": 5})
    raw.reset()
    np.testing.assert_array_equal(info["physics"], raw.physics.get_state())
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        expected = sum(raw.step(action).reward for _ in range(repeat))
        assert reward == pytest.approx(expected)
        np.testing.assert_array_equal(info["physics"], raw.physics.get_state())


def test_cartpole_truncates_at_1000_env_steps_never_terminates():
    env = make_env("dmc:cartpole-swingup", seed=0, image_size=8, fast_render=True)
    env.reset()
    flags = []
    for _ in range(125):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        flags.append((terminated, truncated))
    assert flags[-1] == (False, True)
    assert all(f == (False, False) for f in flags[:-1])
    assert env.unwrapped.elapsed_steps == 1000


def test_physics_info_is_the_state_of_the_current_frame():
    """Setting another env's physics to info["physics"] renders the same frame as the observation."""
    env = make_env("dmc:cartpole-swingup", seed=2, frame_stack=1, **SMALL)
    obs, info = env.reset()
    for _ in range(2):
        obs, _, _, _, info = env.step(env.action_space.sample())
    other = make_env("dmc:cartpole-swingup", seed=9, frame_stack=1, **SMALL)
    other.reset()
    physics = other.unwrapped.physics
    with physics.reset_context():
        physics.set_state(info["physics"])
    np.testing.assert_array_equal(other.unwrapped._frame(), obs)


def test_fast_render_changes_pixels_not_layout():
    a = make_env("dmc:cartpole-swingup", seed=0, image_size=32).reset()[0]
    b = make_env("dmc:cartpole-swingup", seed=0, image_size=32, fast_render=True).reset()[0]
    assert a.shape == b.shape and a.dtype == b.dtype
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(int) - b).mean() < 20  # the same scene, rendered more plainly


def test_quadruped_renders_from_camera_2():
    env = make_env("dmc:quadruped-walk", seed=0, frame_stack=1, image_size=16, fast_render=True)
    obs, _ = env.reset()
    base = env.unwrapped
    assert base.camera == 2
    np.testing.assert_array_equal(obs, base.physics.render(16, 16, camera_id=2).transpose(2, 0, 1))
    assert env_meta(env).action_repeat == 4


def test_unknown_task_suggests_close_names():
    with pytest.raises(ValueError, match="cartpole-swingup"):
        make_env("dmc:cartpole-swingupp")
    with pytest.raises(ValueError, match="cheetah-run"):
        make_env("dmc:cheetah_run")


def test_vector_env_same_step_final_obs_at_time_limit():
    vec = make_vec_env("dmc:cartpole-swingup", 2, seed=0, image_size=8, fast_render=True)
    obs, _ = vec.reset()
    for _ in range(125):
        previous = obs
        obs, _, terminated, truncated, info = vec.step(vec.action_space.sample())
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all()
    for i in range(2):
        np.testing.assert_array_equal(info["final_obs"][i][:6], previous[i][3:])
        assert info["final_info"]["physics"][i].shape == (4,)
        assert (obs[i] == np.tile(obs[i][:3], (3, 1, 1))).all()


def test_dm_control_imported_first_without_display_gets_a_clear_error():
    import os
    import subprocess
    import sys

    code = (
        "from dm_control import suite\n"
        "from atcrl.envs import make_env\n"
        "try:\n"
        "    make_env('dmc:cartpole-swingup', image_size=8)\n"
        "except RuntimeError as err:\n"
        "    print('CAUGHT', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "CAUGHT" in out.stdout and "import atcrl.envs before dm_control" in out.stdout, out.stderr[-2000:]
