"""Crash safety and corruption: interrupted writes stay invisible, damaged files are found and named."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from test_dataset import assert_same_episode, make_episode, meta_for, write_dataset

from atcrl.data import dataset_writer
from atcrl.data.dataset_files import episode_files
from atcrl.data.dataset_meta import CorruptEpisodeError, DatasetError
from atcrl.data.dataset_reader import open_dataset, validate_dataset
from atcrl.data.dataset_writer import DatasetWriter
from atcrl.data.episode_npz import read_episode


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_partial_temp_file_is_ignored(tmp_path, rng):
    episodes = [make_episode(rng) for _ in range(3)]
    paths = write_dataset(tmp_path / "ds", episodes[:2])
    # What a writer killed mid-write leaves behind: a temp file holding part of the next episode.
    DatasetWriter(tmp_path / "side", meta_for(episodes[0])).add(episodes[2])
    whole = (tmp_path / "side" / "episodes" / "ep_000000.npz").read_bytes()
    leftover = paths[0].parent / ".ep_000002.npz.x1y2.tmp"
    leftover.write_bytes(whole[: len(whole) // 2])

    ds = open_dataset(tmp_path / "ds")
    assert ds.paths == tuple(paths)
    report = validate_dataset(tmp_path / "ds")
    assert report.ok and report.temp_files == (leftover,)

    # A resumed writer clears its predecessor's leftovers and takes the next number.
    writer = DatasetWriter(tmp_path / "ds", ds.meta, append=True)
    assert not leftover.exists()
    assert writer.add(episodes[2]).name == "ep_000002.npz"


def test_exception_mid_write_leaves_nothing_visible(tmp_path, rng, monkeypatch):
    episodes = [make_episode(rng) for _ in range(2)]
    writer = DatasetWriter(tmp_path / "ds", meta_for(episodes[0]))
    writer.add(episodes[0])

    def die_halfway(file, arrays, compresslevel):
        file.write(b"PK\x03\x04 half an episode")
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_writer, "write_npz", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        writer.add(episodes[1])
    monkeypatch.undo()

    assert sorted(p.name for p in (tmp_path / "ds" / "episodes").iterdir()) == ["ep_000000.npz"]
    assert writer.add(episodes[1]).name == "ep_000001.npz"
    assert len(open_dataset(tmp_path / "ds")) == 2


_KILLED_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from atcrl.data.dataset_meta import DatasetMeta
    from atcrl.data.dataset_writer import DatasetWriter
    from atcrl.data.episode import Episode
    rng = np.random.default_rng(1)
    steps = 300
    meta = DatasetMeta(frame_shape=(3, 64, 64), action_shape=(), action_dtype="int64")
    writer = DatasetWriter(sys.argv[1], meta, append=True)
    while True:  # incompressible frames make each write slow enough to be killed in the middle
        writer.add(Episode(rng.integers(0, 256, (steps + 1, 3, 64, 64), dtype=np.uint8),
                           np.zeros(steps, np.int64), np.zeros(steps, np.float32), False, True))
""")


def test_killed_writer_never_leaves_an_invalid_episode(tmp_path):
    root = tmp_path / "ds"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root)])
    try:
        deadline = time.monotonic() + 30
        while len(episode_files(root)) < 2:
            assert child.poll() is None, "writer process died on its own"
            assert time.monotonic() < deadline, "writer too slow"
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    report = validate_dataset(root)
    assert report.ok and report.bad == () and report.num_episodes >= 2
    indices = [i for i, _ in episode_files(root)]
    assert indices == list(range(len(indices)))


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_episode_file_is_detected(tmp_path, rng, keep):
    paths = write_dataset(tmp_path / "ds", [make_episode(rng, 30) for _ in range(2)])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptEpisodeError, match="ep_000001.npz") as info:
        open_dataset(tmp_path / "ds")
    assert info.value.path == paths[1]
    with pytest.raises(CorruptEpisodeError, match="ep_000001.npz"):
        read_episode(paths[1], meta_for(make_episode(rng)))


def test_flipped_bytes_are_detected_or_harmless(tmp_path, rng):
    episode = make_episode(rng, 40, physics=True)
    (path,) = write_dataset(tmp_path / "ds", [episode])
    meta = open_dataset(tmp_path / "ds").meta
    original = path.read_bytes()
    positions = np.linspace(0, len(original) - 1, 150).astype(int)
    detected = 0
    for pos in positions:
        damaged = bytearray(original)
        damaged[pos] ^= 0x5A
        path.write_bytes(bytes(damaged))
        try:
            loaded = read_episode(path, meta)
        except CorruptEpisodeError as e:
            assert e.path == path
            detected += 1
        else:  # only bytes that do not carry data (e.g. zip timestamps) may go unnoticed
            assert_same_episode(episode, loaded)
    assert detected >= 0.9 * len(positions)


def test_skip_corrupt_keeps_the_good_episodes(tmp_path, rng):
    episodes = [make_episode(rng, 30) for _ in range(5)]
    paths = write_dataset(tmp_path / "ds", episodes)
    paths[1].write_bytes(paths[1].read_bytes()[:-100])  # truncated: found when opening
    damaged = bytearray(paths[3].read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF  # inside the compressed frames: found when loading
    paths[3].write_bytes(bytes(damaged))

    with pytest.raises(CorruptEpisodeError, match="ep_000001"):
        open_dataset(tmp_path / "ds")
    with pytest.warns(UserWarning, match="ep_000001"):
        ds = open_dataset(tmp_path / "ds", skip_corrupt=True)
    assert len(ds) == 4
    with pytest.warns(UserWarning, match="ep_000003"):
        loaded = ds.load_all()
    assert len(loaded) == 3
    for original, episode in zip([episodes[0], episodes[2], episodes[4]], loaded):
        assert_same_episode(original, episode)
    assert [p for p, _ in ds.bad] == [paths[1], paths[3]]

    report = validate_dataset(tmp_path / "ds")
    assert not report.ok and [p for p, _ in report.bad] == [paths[1], paths[3]]
    assert report.num_episodes == 3


def test_all_episodes_corrupt_is_a_clear_error(tmp_path, rng):
    (path,) = write_dataset(tmp_path / "ds", [make_episode(rng)])
    path.write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no readable episodes.*1 corrupt"):
        open_dataset(tmp_path / "ds", skip_corrupt=True)
