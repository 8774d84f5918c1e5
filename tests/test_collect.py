"""Recording episodes into a dataset: layout, determinism, crash safety, resuming, the CLI."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from atcrl.cli import main as atcrl
from atcrl.data.dataset import episode_files, open_dataset, temp_files
from atcrl.envs import make_env
from atcrl.train.collect import CollectError, collect_episodes, random_policy

SIZE = 24


def collect(spec: str, n: int, out: Path, policy=None, **kw) -> Path:
    policy = policy or random_policy(make_env(spec, image_size=SIZE).action_space)
    return collect_episodes(spec, n, policy, out=out, image_size=SIZE, progress=False, **kw)


def arrays(root: Path) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(getattr(ep, k)) for k in ("frames", "actions", "rewards", "physics",
                                                        "terminated", "truncated", "task")}
            for ep in open_dataset(root)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("spec, dtype, action_shape, ends", [
    ("tiny:catch", np.int64, (), "terminated"), ("tiny:point", np.float32, (2,), "truncated")])
def test_layout_follows_the_env(tmp_path, spec, dtype, action_shape, ends):
    root = collect(spec, 3, tmp_path / "d", seed=5)
    ds = open_dataset(root)
    env = make_env(spec, image_size=SIZE)
    c = env.observation_space.shape[0] // ds.meta.frame_stack
    assert ds.meta.frame_shape == (c, SIZE, SIZE) and ds.meta.tasks == (spec,)
    assert ds.meta.extra["collect"] == {"policy": "custom", "seed": 5, "fast_render": False}
    for ep in ds:
        assert ep.actions.dtype == dtype and ep.actions.shape == (len(ep), *action_shape)
        assert ep.frames.shape == (len(ep) + 1, c, SIZE, SIZE) and ep.frames.dtype == np.uint8
        assert ep.physics.shape == (len(ep) + 1, ds.meta.physics_dim)
        assert getattr(ep, ends) and ep.task == spec
        assert env.action_space.contains(ep.actions[0] if dtype == np.float32 else int(ep.actions[0]))


def test_recorded_frames_and_physics_are_what_the_env_showed(tmp_path):
    """Replaying the recorded actions from the same reset reproduces every frame and state."""
    seen = []

    def spy(obs, rng):
        seen.append(obs.copy())
        return rng.uniform(-1, 1, 2).astype(np.float32)

    root = collect("tiny:point", 1, tmp_path / "d", policy=spy, seed=2)
    ep = open_dataset(root)[0]
    k = open_dataset(root).meta.frame_stack
    # The policy saw stacks whose newest frame is the recorded frame of that step.
    for t, obs in enumerate(seen):
        np.testing.assert_array_equal(obs[-3:], ep.frames[t])
        np.testing.assert_array_equal(obs[:3], ep.frames[max(t - k + 1, 0)])
    assert len(seen) == len(ep)


def test_same_seed_same_data_and_other_seed_differs(tmp_path):
    a = arrays(collect("tiny:point", 3, tmp_path / "a", seed=1))
    assert_same(a, arrays(collect("tiny:point", 3, tmp_path / "b", seed=1)))
    c = arrays(collect("tiny:point", 3, tmp_path / "c", seed=2))
    assert not np.array_equal(a[0]["physics"], c[0]["physics"])


def test_crash_keeps_finished_episodes_and_append_resumes_to_the_same_data(tmp_path):
    reference = arrays(collect("tiny:catch", 6, tmp_path / "ref", seed=3))
    steps = {"n": 0}
    inner = random_policy(gym.spaces.Discrete(3))

    def crashes_in_episode_4(obs, rng):
        steps["n"] += 1
        if steps["n"] == 3 * 9 + 5:  # catch episodes are 9 steps: mid-way through the 4th
            raise KeyboardInterrupt
        return inner(obs, rng)

    with pytest.raises(KeyboardInterrupt):
        collect("tiny:catch", 6, tmp_path / "run", policy=crashes_in_episode_4, seed=3)
    assert len(episode_files(tmp_path / "run")) == 3 and not temp_files(tmp_path / "run")
    assert_same(arrays(tmp_path / "run"), reference[:3])
    collect("tiny:catch", 6, tmp_path / "run", seed=3, append=True)
    assert_same(arrays(tmp_path / "run"), reference)
    assert [i for i, _ in episode_files(tmp_path / "run")] == list(range(6))


def test_append_counts_existing_episodes_and_grows(tmp_path, capsys):
    root = collect("tiny:point", 2, tmp_path / "d")
    collect("tiny:point", 2, root, append=True)
    assert "nothing to record" in capsys.readouterr().err
    assert len(open_dataset(root)) == 2
    collect("tiny:point", 4, root, append=True)
    assert len(open_dataset(root)) == 4


def test_refuses_to_overwrite_or_mix_layouts(tmp_path):
    root = collect("tiny:point", 1, tmp_path / "d")
    with pytest.raises(CollectError, match="--append"):
        collect("tiny:point", 1, root)
    with pytest.raises(CollectError, match="frame_shape"):
        collect_episodes("tiny:point", 2, random_policy(gym.spaces.Box(-1, 1, (2,))), out=root,
                         image_size=SIZE + 8, append=True, progress=False)
    with pytest.raises(CollectError, match="n_episodes"):
        collect("tiny:point", 0, tmp_path / "e")


def test_max_steps_cuts_episodes_as_truncated(tmp_path):
    ep = open_dataset(collect("tiny:point", 1, tmp_path / "d", max_steps=7))[0]
    assert len(ep) == 7 and ep.truncated and not ep.terminated


def test_random_policy_draws_from_the_space():
    rng = np.random.default_rng(0)
    box = gym.spaces.Box(np.array([-1, 0], np.float32), np.array([0, 5], np.float32))
    draws = np.stack([random_policy(box)(None, rng) for _ in range(500)])
    assert draws.dtype == np.float32 and (draws >= box.low).all() and (draws <= box.high).all()
    assert draws[:, 1].max() > 4.5 and draws[:, 1].min() < 0.5
    actions = {random_policy(gym.spaces.Discrete(3, start=2))(None, rng) for _ in range(100)}
    assert actions == {2, 3, 4}
    with pytest.raises(CollectError, match="bounded"):
        random_policy(gym.spaces.Box(-np.inf, np.inf, (2,)))


def test_cli_collects_and_refuses_a_missing_agent_checkpoint(tmp_path, capsys):
    out = tmp_path / "cli"
    assert atcrl(["collect", "--env", "tiny:catch", "--episodes", "2", "--out", str(out), "--image-size", "16",
                  "--seed", "4"]) == 0
    ds = open_dataset(out)
    assert len(ds) == 2 and ds.meta.extra["collect"]["policy"] == "random" and ds.meta.num_actions == 3
    assert atcrl(["collect", "--env", "tiny:catch", "--episodes", "1", "--out", str(tmp_path / "x"),
                  "--checkpoint", "agent.pt"]) == 2
    err = capsys.readouterr().err
    assert "agent.pt does not exist" in err and "atcrl train" in err
    assert atcrl(["collect", "--env", "tiny:nope", "--episodes", "1", "--out", str(tmp_path / "y")]) == 2
    assert "unknown tiny env" in capsys.readouterr().err


def test_dmc_episode_records_continuous_actions_and_physics(tmp_path):
    pytest.importorskip("dm_control")
    ep = open_dataset(collect("dmc:cartpole-swingup", 1, tmp_path / "d", max_steps=3))[0]
    assert ep.actions.shape == (3, 1) and ep.actions.dtype == np.float32
    assert ep.physics.shape == (4, 4) and ep.frames.shape == (4, 3, SIZE, SIZE)
    with pytest.raises(CollectError, match="fast_render"):
        collect("dmc:cartpole-swingup", 2, tmp_path / "d", append=True, fast_render=True)
