"""Minari bridge: ours -> Minari -> ours is bit-exact; foreign image datasets (HWC, stacked) import correctly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_dataset import assert_same_episode, make_episode, smooth_frames, write_dataset

from atcrl.data.dataset_cli import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    ExportMinariConfig,
    ImportMinariConfig,
    run_export_minari,
    run_import_minari,
)
from atcrl.data.dataset_meta import DatasetError
from atcrl.data.dataset_reader import open_dataset
from atcrl.data.episode import stack_indices

minari = pytest.importorskip("minari")
pytest.importorskip("h5py", reason="Minari's hdf5 storage needs h5py: pip install 'minari[hdf5]'")
gym = pytest.importorskip("gymnasium")
from atcrl.data.minari_bridge import export_minari, import_minari


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def foreign_dataset(dataset_id, observations, obs_space, action_space, actions, **kwargs):
    """A Minari dataset written by Minari's own API, as another tool would."""
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for obs, act in zip(observations, actions):
        steps = len(act)
        buffers.append(
            EpisodeBuffer(
                observations=obs,
                actions=act,
                rewards=np.linspace(0, 1, steps),
                terminations=np.arange(steps) == steps - 1,
                truncations=np.zeros(steps, bool),
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(
            dataset_id, buffers, observation_space=obs_space, action_space=action_space, **kwargs
        )


@pytest.mark.parametrize("discrete, physics", [(True, False), (False, True)])
def test_round_trip_through_minari_is_bit_exact(tmp_path, discrete, physics):
    rng = np.random.default_rng(5)
    episodes = [
        make_episode(rng, steps, discrete=discrete, physics=physics, task=task, end=end)
        for steps, task, end in [
            (6, "dmc:cheetah-run", "truncated"),
            (3, "dmc:walker-walk", "terminated"),
            (4, "dmc:cheetah-run", "open"),
        ]
    ]
    write_dataset(tmp_path / "ours", episodes, frame_stack=3, action_repeat=4, extra={"policy": "expert"})

    exported = export_minari(tmp_path / "ours", "atcrl/test-v0")
    # The Minari side holds the single frames and flags in its own terms.
    mds = minari.load_dataset("atcrl/test-v0")
    assert mds.total_episodes == 3 and mds.total_steps == 13 and exported.is_dir()
    first = mds[0]
    assert np.array_equal(first.observations, episodes[0].frames)
    assert first.truncations[-1] and not first.terminations.any()

    import_minari("atcrl/test-v0", tmp_path / "back")
    original, back = open_dataset(tmp_path / "ours"), open_dataset(tmp_path / "back")
    assert back.meta == original.meta
    for a, b in zip(episodes, back, strict=True):
        assert_same_episode(a, b)
    # The dataset's directory works as well as its id.
    by_path = open_dataset(import_minari(exported, tmp_path / "by-path"))
    assert by_path.meta == original.meta and len(by_path) == len(episodes)


def test_import_hwc_images_with_offset_discrete_actions(tmp_path):
    rng = np.random.default_rng(6)
    frames = [smooth_frames(rng, steps + 1, (3, 32, 40)) for steps in (5, 8)]
    observations = [f.transpose(0, 2, 3, 1).copy() for f in frames]  # [T+1, H, W, C]
    actions = [rng.integers(1, 4, size=len(f) - 1) for f in frames]
    foreign_dataset(
        "other/pix-v1",
        observations,
        gym.spaces.Box(0, 255, (32, 40, 3), np.uint8),
        gym.spaces.Discrete(3, start=1),
        actions,
        jpeg_encoding=False,
    )

    ds = open_dataset(import_minari("other/pix-v1", tmp_path / "ours"))
    assert ds.meta.frame_shape == (3, 32, 40) and ds.meta.num_actions == 3 and ds.meta.frame_stack == 1
    assert ds.meta.tasks == ("minari:other/pix-v1",) and ds.meta.extra["source"] == "minari:other/pix-v1"
    for f, a, episode in zip(frames, actions, ds, strict=True):
        assert np.array_equal(episode.frames, f)
        assert episode.actions.dtype == np.int64 and np.array_equal(episode.actions, a - 1)
        assert episode.rewards.dtype == np.float32 and episode.terminated and not episode.truncated


@pytest.mark.parametrize("channels, stack, four_d", [(3, 3, False), (1, 4, False), (3, 2, True)])
def test_import_detects_frame_stacks_and_keeps_the_newest_frame(tmp_path, channels, stack, four_d):
    rng = np.random.default_rng(7)
    frames = [smooth_frames(rng, steps + 1, (channels, 16, 16)) for steps in (6, 3)]
    # Stacks as a frame-stacking wrapper makes them: oldest first, the reset frame repeated at the start.
    stacks = [f[stack_indices(np.arange(len(f)), stack)] for f in frames]  # [T+1, k, C, H, W]
    if four_d:
        observations = [s.transpose(0, 1, 3, 4, 2).copy() for s in stacks]  # [T+1, k, H, W, C]
    else:
        observations = [s.reshape(len(s), stack * channels, 16, 16) for s in stacks]
    space = gym.spaces.Box(0, 255, observations[0].shape[1:], np.uint8)
    actions = [rng.normal(size=(len(f) - 1, 2)).astype(np.float32) for f in frames]
    foreign_dataset("stacked-v0", observations, space, gym.spaces.Box(-1, 1, (2,), np.float32), actions)

    ds = open_dataset(import_minari("stacked-v0", tmp_path / "ours"))
    assert ds.meta.frame_shape == (channels, 16, 16) and ds.meta.frame_stack == stack
    for f, a, episode in zip(frames, actions, ds, strict=True):
        assert np.array_equal(episode.frames, f) and np.array_equal(episode.actions, a)


def test_jpeg_encoded_dataset_imports_with_right_shape(tmp_path):
    rng = np.random.default_rng(8)
    frames = smooth_frames(rng, 5, (3, 32, 32))
    observations = [frames.transpose(0, 2, 3, 1).copy()]
    foreign_dataset(
        "jpeg-v0",
        observations,
        gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
        gym.spaces.Discrete(2),
        [np.zeros(4, np.int64)],
    )
    (episode,) = open_dataset(import_minari("jpeg-v0", tmp_path / "ours"))
    assert episode.frames.shape == frames.shape
    assert np.abs(episode.frames.astype(int) - frames).mean() < 8  # lossy, but the same picture


def test_bad_minari_input_is_a_clear_error(tmp_path, minari_root):
    with pytest.raises(DatasetError, match=r"no local Minari dataset 'nope-v0'.*MINARI_DATASETS_PATH"):
        import_minari("nope-v0", tmp_path / "out")
    with pytest.raises(DatasetError, match="not a Minari dataset"):
        import_minari(tmp_path, tmp_path / "out")
    foreign_dataset(
        "vector-v0",
        [np.zeros((3, 4), np.float32)],
        gym.spaces.Box(-1, 1, (4,), np.float32),
        gym.spaces.Discrete(2),
        [np.zeros(2, np.int64)],
    )
    with pytest.raises(DatasetError, match="image observations"):
        import_minari("vector-v0", tmp_path / "out")

    write_dataset(tmp_path / "ours", [make_episode(np.random.default_rng(0))])
    with pytest.raises(DatasetError, match="ids look like"):
        export_minari(tmp_path / "ours", "no version")
    export_minari(tmp_path / "ours", "taken-v0")
    with pytest.raises(DatasetError, match="already exists"):
        export_minari(tmp_path / "ours", "taken-v0")
    with pytest.raises(DatasetError, match="already holds a dataset"):
        import_minari("taken-v0", tmp_path / "ours")


def test_cli_export_then_import(tmp_path, minari_root, monkeypatch, capsys):
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    episodes = [make_episode(np.random.default_rng(9), 4) for _ in range(2)]
    write_dataset(tmp_path / "ours", episodes)
    assert (
        run_export_minari(ExportMinariConfig(tmp_path / "ours", id="cli-v0", minari_root=minari_root))
        == EXIT_OK
    )
    assert (minari_root / "cli-v0" / "data" / "metadata.json").is_file()
    cfg = ImportMinariConfig("cli-v0", out=tmp_path / "back", minari_root=minari_root)
    assert run_import_minari(cfg) == EXIT_OK
    for a, b in zip(episodes, open_dataset(tmp_path / "back"), strict=True):
        assert_same_episode(a, b)
    assert (
        run_import_minari(ImportMinariConfig("cli-v0", out=tmp_path / "back", minari_root=minari_root))
        == EXIT_BAD_INPUT
    )
    assert "already holds a dataset" in capsys.readouterr().err
