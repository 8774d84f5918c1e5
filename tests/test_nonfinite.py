"""NaN/Inf is never hidden: writers refuse it, scans and `validate` name file, field and index, `info` does not
average it, `probe` and `pretrain` refuse it (or skip it with --skip-corrupt, saying so), R² keeps NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reltools import point_dataset, tiny_episode

from atcrl.cli import main as atcrl
from atcrl.data.dataset import DatasetError, DatasetWriter, episode_files, read_episode, read_meta
from atcrl.data.dataset_files import atomic_write
from atcrl.data.episode_npz import episode_arrays, write_npz
from atcrl.train.probe import r2_scores

DEFECTS = {1: ("physics", (3, 1), np.nan), 2: ("rewards", (7,), np.inf), 3: ("actions", (0, 1), np.nan)}
"""Episode index -> (array, index, value) planted in it."""


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> Path:
    """Five tiny:point episodes; episodes 1-3 each hold one NaN or Inf (written past the writer's check)."""
    root = point_dataset(tmp_path_factory.mktemp("d") / "point", episodes=5)
    meta = read_meta(root)
    files = dict(episode_files(root))
    for index, (name, at, value) in DEFECTS.items():
        arrays = episode_arrays(read_episode(files[index], meta), meta)
        arrays[name] = arrays[name].copy()
        arrays[name][at] = value
        atomic_write(files[index], lambda f, arrays=arrays: write_npz(f, arrays, 1))
    return root


def test_validate_names_file_field_and_index(poisoned, capsys):
    assert atcrl(["dataset", "validate", str(poisoned)]) == 1
    out = capsys.readouterr().out
    for index, (name, at, _) in DEFECTS.items():
        line = next(line for line in out.splitlines() if f"ep_{index:06d}.npz" in line)
        assert line.startswith("BAD") and f"{name} holds 1 non-finite value(s)" in line and f"index {list(at)}" in line
    assert "2 good episode(s)" in out and "3 bad file(s)" in out


def test_info_refuses_to_average_inf_and_skips_it_when_asked(poisoned, capsys):
    assert atcrl(["dataset", "info", str(poisoned)]) == 1
    err = capsys.readouterr().err
    assert "ep_000001.npz" in err and "--skip-corrupt" in err
    assert atcrl(["dataset", "info", str(poisoned), "--skip-corrupt"]) == 0
    out = capsys.readouterr().out
    assert "inf" not in out.split("returns")[1].splitlines()[0] and "nan" not in out
    assert "3 corrupt file(s)" in out


def test_probe_refuses_non_finite_targets_or_skips_them_saying_so(poisoned, capsys):
    assert atcrl(["probe", "--encoder", "random", "--data", str(poisoned)]) == 2
    err = capsys.readouterr().err
    assert "ep_000001.npz" in err and "physics holds 1 non-finite" in err and "--skip-corrupt" in err
    assert atcrl(["probe", "--encoder", "random", "--data", str(poisoned), "--skip-corrupt"]) == 0
    captured = capsys.readouterr()
    assert sum("skipping" in line for line in captured.err.splitlines()) == 3
    assert "nan" not in captured.out.lower()


def test_pretrain_refuses_non_finite_inputs_or_skips_them(poisoned, tmp_path, capsys):
    args = ["pretrain", "--data", str(poisoned), "--updates", "1", "--batch-size", "8", "--val-fraction", "0",
            "--no-tensorboard"]
    assert atcrl([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "ep_000001.npz: physics holds 1 non-finite" in err and not (tmp_path / "a").exists()
    assert atcrl([*args, "--out", str(tmp_path / "b"), "--skip-corrupt"]) == 0
    assert "skipping" in capsys.readouterr().err


def test_writer_refuses_non_finite_arrays(tmp_path):
    episode, meta = tiny_episode()
    episode.rewards[2] = np.nan
    with pytest.raises(DatasetError, match=r"rewards holds 1 non-finite value\(s\).*index \[2\]"):
        DatasetWriter(tmp_path / "ds", meta).add(episode)
    assert not list((tmp_path / "ds" / "episodes").iterdir())


def test_r2_never_turns_nan_into_a_number():
    y = np.array([[0.0, 1.0], [1.0, np.nan], [2.0, 3.0]])
    pred = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    scores = r2_scores(y, pred)
    assert scores[0] == 1.0 and np.isnan(scores[1])
    assert np.isnan(r2_scores(pred, np.where(np.isnan(y), np.inf, y))[1])
