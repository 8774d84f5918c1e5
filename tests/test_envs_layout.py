"""Properties every env family shares: observation layout, frame-stack order, seeding, physics info,
and a vector env whose layout and SAME_STEP autoreset match the single env."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from atcrl.data.episode import stack_indices
from atcrl.envs import env_meta, make_env, make_vec_env

# (spec, needed module, make_env kwargs): small images keep DMC / MiniWorld rendering cheap.
CASES = [
    ("tiny:point", None, {"image_size": 84}),
    ("tiny:point", None, {"image_size": 32}),
    ("tiny:catch", None, {"image_size": 84}),
    ("tiny:catch", None, {"image_size": 32}),
    ("dmc:cartpole-swingup", "dm_control", {"image_size": 32, "fast_render": True}),
    ("atari:Pong", "ale_py", {"image_size": 84}),
    ("gym:MiniWorld-OneRoom-v0", "miniworld", {"image_size": 32}),
]
IDS = [f"{spec}@{kw['image_size']}" for spec, _, kw in CASES]
EXPECTED = {  # family defaults: (frame channels, frame stack, physics dim)
    "tiny:point": (3, 3, 4),
    "tiny:catch": (1, 4, 3),
    "dmc:cartpole-swingup": (3, 3, 4),
    "atari:Pong": (1, 4, None),
    "gym:MiniWorld-OneRoom-v0": (3, 3, None),
}


def _skip_missing(module: str | None) -> None:
    # find_spec, not importorskip: importing miniworld here would beat atcrl's headless GL setup.
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def rollout(env, steps: int, seed: int):
    """Observations, infos and done flags of `steps` seeded random actions (stops at an episode end)."""
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    observations, infos, flags = [obs], [info], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        observations.append(obs)
        infos.append(info)
        flags.append((reward, terminated, truncated))
        if terminated or truncated:
            break
    return np.stack(observations), infos, flags


@pytest.mark.parametrize("spec,module,kwargs", CASES, ids=IDS)
def test_observation_layout_and_meta(spec, module, kwargs):
    _skip_missing(module)
    env = make_env(spec, seed=0, **kwargs)
    meta = env_meta(env)
    channels, stack, physics_dim = EXPECTED[spec]
    size = kwargs["image_size"]
    assert (meta.frame_channels, meta.frame_stack, meta.physics_dim) == (channels, stack, physics_dim)
    assert env.observation_space.shape == (channels * stack, size, size)
    assert env.observation_space.dtype == np.uint8
    observations, infos, flags = rollout(env, 6, seed=0)
    assert observations.dtype == np.uint8
    assert all(env.observation_space.contains(o) for o in observations)
    first = observations[0]
    # At reset the stack holds k copies of the first frame.
    for j in range(1, stack):
        np.testing.assert_array_equal(first[j * channels : (j + 1) * channels], first[:channels])
    for reward, terminated, truncated in flags:
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    for info in infos:
        if physics_dim is None:
            assert "physics" not in info
        else:
            assert info["physics"].dtype == np.float64 and info["physics"].shape == (physics_dim,)
    assert meta.discrete == hasattr(env.action_space, "n")
    env.close()


@pytest.mark.parametrize("spec,module,kwargs", CASES, ids=IDS)
def test_frame_stack_is_oldest_first_over_single_frames(spec, module, kwargs):
    """The k-stacked observation at t equals the single frames at stack_indices(t, k) concatenated."""
    _skip_missing(module)
    frames, _, _ = rollout(make_env(spec, frame_stack=1, **kwargs), 7, seed=3)
    stacked_env = make_env(spec, **kwargs)
    k = env_meta(stacked_env).frame_stack
    stacked, _, _ = rollout(stacked_env, 7, seed=3)
    assert len(frames) == len(stacked) >= 4
    assert not all(np.array_equal(frames[0], f) for f in frames[1:]), "frames never changed: test is vacuous"
    for t in range(len(stacked)):
        np.testing.assert_array_equal(stacked[t], np.concatenate(frames[stack_indices(np.array(t), k)], axis=0))


@pytest.mark.parametrize("spec,module,kwargs", CASES[::2] + [CASES[5]], ids=IDS[::2] + [IDS[5]])
def test_seed_reproduces_observations(spec, module, kwargs):
    _skip_missing(module)
    a, infos_a, flags_a = rollout(make_env(spec, **kwargs), 5, seed=11)
    b, infos_b, flags_b = rollout(make_env(spec, **kwargs), 5, seed=11)
    np.testing.assert_array_equal(a, b)
    assert flags_a == flags_b
    if "physics" in infos_a[0]:
        np.testing.assert_array_equal(infos_a[-1]["physics"], infos_b[-1]["physics"])
    # make_env(seed=...) seeds the first plain reset the same way reset(seed=...) does.
    env = make_env(spec, seed=11, **kwargs)
    np.testing.assert_array_equal(env.reset()[0], a[0])


@pytest.mark.parametrize("spec,module,kwargs", [CASES[3], CASES[4], CASES[5]], ids=[IDS[3], IDS[4], IDS[5]])
def test_vector_env_matches_single_env_layout(spec, module, kwargs):
    _skip_missing(module)
    single = make_env(spec, **kwargs)
    vec = make_vec_env(spec, 2, seed=5, **kwargs)
    assert vec.single_observation_space == single.observation_space
    assert vec.single_action_space == single.action_space
    assert env_meta(vec) == env_meta(single)
    obs, _ = vec.reset()
    assert obs.shape == (2, *single.observation_space.shape) and obs.dtype == np.uint8
    vec.action_space.seed(0)
    obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
    assert obs.shape == (2, *single.observation_space.shape)
    assert reward.shape == terminated.shape == truncated.shape == (2,)
    assert np.issubdtype(reward.dtype, np.floating) and terminated.dtype == truncated.dtype == np.bool_
    vec.close()
