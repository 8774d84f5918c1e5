"""The on-disk episode format: bit-exact round trips, the writer, clear errors for bad paths.

Also holds the helpers the other dataset tests import (make_episode, write_dataset, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atcrl.data import dataset as dataset_facade
from atcrl.data.dataset_files import episode_files
from atcrl.data.dataset_meta import DatasetError, DatasetMeta, meta_from_env
from atcrl.data.dataset_reader import open_dataset
from atcrl.data.dataset_writer import DatasetWriter
from atcrl.data.episode import Episode


def smooth_frames(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Frames that look like images: a coarse random field drifting over time, upsampled bilinearly."""
    c, h, w = shape
    coarse = np.cumsum(rng.normal(size=(n, c, 6, 6)), axis=0) * 0.3 + rng.normal(size=(1, c, 6, 6))
    up_h = np.array([np.interp(np.linspace(0, 5, h), np.arange(6), row) for row in np.eye(6)]).T
    up_w = np.array([np.interp(np.linspace(0, 5, w), np.arange(6), row) for row in np.eye(6)]).T
    field = up_h @ coarse @ up_w.T
    return np.clip(128 + 40 * field, 0, 255).astype(np.uint8)


def make_episode(
    rng: np.random.Generator,
    steps: int = 12,
    *,
    discrete: bool = True,
    physics: bool = False,
    task: str = "dmc:cartpole-swingup",
    end: str = "terminated",
    frame_shape: tuple[int, int, int] = (3, 16, 16),
    action_dim: int = 2,
) -> Episode:
    if discrete:
        actions = rng.integers(0, 5, size=steps).astype(np.int64)
    else:
        actions = rng.uniform(-1, 1, size=(steps, action_dim)).astype(np.float32)
    return Episode(
        frames=smooth_frames(rng, steps + 1, frame_shape),
        actions=actions,
        rewards=rng.normal(size=steps).astype(np.float32),
        terminated=end == "terminated",
        truncated=end == "truncated",
        physics=rng.normal(size=(steps + 1, 5)) if physics else None,
        task=task,
    )


def meta_for(episode: Episode, **overrides) -> DatasetMeta:
    defaults = {"num_actions": 5} if episode.actions.dtype == np.int64 else {}
    return DatasetMeta.from_episode(episode, **{**defaults, **overrides})


def write_dataset(path: Path, episodes: list[Episode], **meta_overrides) -> list[Path]:
    writer = DatasetWriter(path, meta_for(episodes[0], **meta_overrides))
    return [writer.add(e) for e in episodes]


def assert_same_episode(a: Episode, b: Episode) -> None:
    for name in ("frames", "actions", "rewards"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    assert (a.physics is None) == (b.physics is None)
    if a.physics is not None:
        assert a.physics.dtype == b.physics.dtype and np.array_equal(a.physics, b.physics)
    assert (a.terminated, a.truncated, a.task) == (b.terminated, b.truncated, b.task)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("physics", [True, False])
def test_round_trip_is_bit_exact(tmp_path, rng, discrete, physics):
    episodes = [
        make_episode(rng, steps, discrete=discrete, physics=physics, end=end)
        for steps, end in [(12, "terminated"), (7, "truncated"), (1, "open"), (0, "truncated")]
    ]
    paths = write_dataset(tmp_path / "ds", episodes, frame_stack=3, action_repeat=4, extra={"seed": 7})

    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == len(episodes) and ds.paths == tuple(paths)
    assert ds.num_steps == sum(len(e) for e in episodes)
    assert ds.meta == meta_for(episodes[0], frame_stack=3, action_repeat=4, extra={"seed": 7})
    for original, loaded, by_index in zip(episodes, ds, [ds[i] for i in range(len(ds))]):
        assert_same_episode(original, loaded)
        assert_same_episode(original, by_index)


def test_summaries_match_loaded_episodes(tmp_path, rng):
    episodes = [make_episode(rng, steps, physics=True) for steps in (3, 9, 5)]
    write_dataset(tmp_path / "ds", episodes)
    ds = open_dataset(tmp_path / "ds")
    for summary, episode in zip(ds.summaries, episodes):
        assert summary.steps == len(episode)
        assert summary.episode_return == pytest.approx(float(episode.rewards.sum(dtype=np.float64)))
        arrays = [episode.frames, episode.actions, episode.rewards, episode.physics]
        # bools and the task string are a few bytes each; the arrays above dominate
        assert sum(a.nbytes for a in arrays) <= summary.nbytes <= sum(a.nbytes for a in arrays) + 200
    assert ds.nbytes == sum(s.nbytes for s in ds.summaries)


def test_multi_task_dataset_lists_tasks_in_order(tmp_path, rng):
    tasks = ["atari:Pong", "atari:Breakout", "atari:Pong", "atari:Qbert"]
    episodes = [make_episode(rng, 4, task=t) for t in tasks]
    write_dataset(tmp_path / "ds", episodes)
    ds = open_dataset(tmp_path / "ds")
    assert ds.meta.tasks == ("atari:Pong", "atari:Breakout", "atari:Qbert")
    assert [e.task for e in ds] == tasks


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.integers(0, 6),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
    action_shape=st.sampled_from([(), (1,), (3,), (2, 2)]),
    dtype=st.sampled_from(["uint8", "float32"]),
    seed=st.integers(0, 2**31),
)
def test_round_trip_any_shapes(tmp_path_factory, steps, shape, action_shape, dtype, seed):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(steps + 1, *shape)).astype(dtype)
    actions = (
        rng.integers(0, 3, size=(steps, *action_shape))
        if action_shape == ()
        else rng.normal(size=(steps, *action_shape)).astype(np.float32)
    )
    episode = Episode(frames, actions, rng.normal(size=steps).astype(np.float32), False, True, task="t")
    path = tmp_path_factory.mktemp("ds")
    write_dataset(path / "d", [episode])
    assert_same_episode(episode, open_dataset(path / "d")[0])


# ---------------------------------------------------------------- writer


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda e: Episode(e.frames[:, :, :8], e.actions, e.rewards, True, False), "frames is uint8"),
        (lambda e: Episode(e.frames, e.actions.astype(np.int32), e.rewards, True, False), "actions is int32"),
        (
            lambda e: Episode(e.frames, e.actions, e.rewards.astype(np.float64), True, False),
            "rewards is float64",
        ),
        (
            lambda e: Episode(e.frames, e.actions, e.rewards, True, False, physics=np.zeros((len(e) + 1, 5))),
            "physics_dim is null",
        ),
        (lambda e: Episode(e.frames, e.actions + 10, e.rewards, True, False), "outside"),
    ],
)
def test_writer_rejects_episodes_that_do_not_fit(tmp_path, rng, mutate, match):
    episode = make_episode(rng)
    writer = DatasetWriter(tmp_path / "ds", meta_for(episode))
    with pytest.raises(DatasetError, match=match):
        writer.add(mutate(episode))
    assert episode_files(tmp_path / "ds") == []


def test_append_continues_numbering(tmp_path, rng):
    episodes = [make_episode(rng, 3) for _ in range(6)]
    paths = write_dataset(tmp_path / "ds", episodes[:3])
    meta = open_dataset(tmp_path / "ds").meta
    paths[1].unlink()  # a gap must not be refilled: numbers stay unique over a dataset's life
    writer = DatasetWriter(tmp_path / "ds", meta, append=True)
    assert [writer.add(e).name for e in episodes[3:5]] == ["ep_000003.npz", "ep_000004.npz"]
    # A new task seen while appending is added to the meta.
    writer.add(make_episode(rng, 3, task="dmc:walker-walk"))
    ds = open_dataset(tmp_path / "ds")
    assert [i for i, _ in episode_files(tmp_path / "ds")] == [0, 2, 3, 4, 5]
    assert ds.meta.tasks == ("dmc:cartpole-swingup", "dmc:walker-walk")
    # append=True on a missing directory starts a dataset.
    assert DatasetWriter(tmp_path / "new", meta, append=True).add(episodes[5]).name == "ep_000000.npz"


def test_append_with_a_different_meta_is_refused(tmp_path, rng):
    episode = make_episode(rng)
    write_dataset(tmp_path / "ds", [episode])
    other = meta_for(episode, action_repeat=8)
    with pytest.raises(DatasetError, match="action_repeat: dataset has 1, writer was given 8"):
        DatasetWriter(tmp_path / "ds", other, append=True)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        DatasetWriter(tmp_path / "ds", meta_for(episode))


# ---------------------------------------------------------------- bad paths


def test_bad_paths_give_clear_errors(tmp_path, rng):
    episode = make_episode(rng)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        open_dataset(tmp_path / "file")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not an atcrl dataset: it has no meta.json"):
        open_dataset(tmp_path / "plain")
    (tmp_path / "mini" / "data").mkdir(parents=True)
    (tmp_path / "mini" / "data" / "metadata.json").write_text("{}")
    with pytest.raises(DatasetError, match="import-minari"):
        open_dataset(tmp_path / "mini")
    DatasetWriter(tmp_path / "empty", meta_for(episode))
    with pytest.raises(DatasetError, match="no readable episodes"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="refusing to write"):
        DatasetWriter(tmp_path / "plain", meta_for(episode))
    assert os.listdir(tmp_path / "plain") == ["notes.txt"]


# ---------------------------------------------------------------- recording from a real env


@pytest.mark.parametrize("spec", ["tiny:point", "tiny:catch"])
def test_episode_recorded_from_an_env_round_trips(tmp_path, spec):
    envs = pytest.importorskip("atcrl.envs")
    env = envs.make_env(spec, seed=0, image_size=16)
    meta = meta_from_env(env, extra={"policy": "random"})
    info = envs.env_meta(env)
    assert meta.frame_shape == (info.frame_channels, 16, 16) and meta.frame_stack == info.frame_stack
    assert meta.discrete == info.discrete and meta.tasks == (spec,) and meta.physics_dim == info.physics_dim

    env.action_space.seed(0)
    obs, step_info = env.reset()
    frames, physics, actions, rewards = [obs[-meta.frame_channels :]], [step_info["physics"]], [], []
    terminated = truncated = False
    while not (terminated or truncated) and len(actions) < 20:
        action = env.action_space.sample()
        obs, reward, terminated, truncated, step_info = env.step(action)
        frames.append(obs[-meta.frame_channels :])
        physics.append(step_info["physics"])
        actions.append(action)
        rewards.append(reward)
    episode = Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions, dtype=meta.action_dtype),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=bool(terminated),
        truncated=bool(truncated),
        physics=np.asarray(physics, dtype=np.float64),
        task=spec,
    )
    DatasetWriter(tmp_path / "ds", meta).add(episode)
    assert_same_episode(episode, open_dataset(tmp_path / "ds")[0])


# ---------------------------------------------------------------- the public entry point


def test_dataset_module_exports_exactly_its_all():
    exported = {name for name in vars(dataset_facade) if not name.startswith("_") and name != "annotations"}
    assert exported == set(dataset_facade.__all__)
    assert dataset_facade.DatasetWriter is DatasetWriter and dataset_facade.open_dataset is open_dataset
