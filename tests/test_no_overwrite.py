"""No silent overwrite: `atcrl export` and `atcrl probe --out` refuse existing files without --force, never write
into a dataset's or a run directory's own files, and refuse before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest
from reltools import point_dataset, snapshot

from atcrl.cli import main as atcrl
from atcrl.data.dataset import open_dataset
from atcrl.encoder_io import load_encoder
from atcrl.output_guard import OutputError, check_outputs, protected_owner


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return point_dataset(tmp_path_factory.mktemp("d") / "point")


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> tuple[Path, Path]:
    """Two finished pretraining runs (checkpoints, config.json, their own exported encoder)."""
    root = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", "0"), ("b", "1")):
        assert atcrl(["pretrain", "--data", str(data), "--out", str(root / name), "--updates", "2", "--ckpt-every",
                      "1", "--batch-size", "16", "--val-fraction", "0", "--no-tensorboard", "--seed", seed]) == 0
    return root / "a", root / "b"


@pytest.mark.parametrize("target", ["data/meta.json", "data/episodes/x.safetensors", "other", "other/config.json",
                                    "other/encoder.safetensors", "run", "run/checkpoints/e.json"])
def test_export_never_writes_into_a_dataset_or_a_run(target, data, runs, capsys):
    run, other = runs
    path = {"data": data, "other": other, "run": run}[target.split("/")[0]].joinpath(*target.split("/")[1:])
    before = {d: snapshot(d) for d in (data, run, other)}
    for force in ([], ["--force"]):
        assert atcrl(["export", "--run", str(run), "--out", str(path), *force]) == 2
        err = capsys.readouterr().err
        assert "is inside the" in err and ("dataset" in err or "run directory" in err), err
    assert {d: snapshot(d) for d in before} == before
    assert len(open_dataset(data)) == 3 and load_encoder(other).in_shape == load_encoder(run).in_shape


def test_export_refuses_an_existing_file_unless_forced(runs, tmp_path, capsys):
    run, _ = runs
    target = tmp_path / "enc.safetensors"
    assert atcrl(["export", "--run", str(run), "--out", str(target)]) == 0
    before = snapshot(tmp_path)
    assert atcrl(["export", "--run", str(run), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err
    assert snapshot(tmp_path) == before
    assert atcrl(["export", "--run", str(run), "--checkpoint", "1", "--out", str(target), "--force"]) == 0
    assert snapshot(tmp_path) != before


def test_probe_out_is_checked_before_the_probe_runs(data, tmp_path, capsys, monkeypatch):
    from atcrl.train import probe_cli

    def never(*args, **kwargs):
        raise AssertionError("the probe ran although its --out was refused")

    monkeypatch.setattr(probe_cli, "probe_task", never)
    before = snapshot(data)
    assert atcrl(["probe", "--encoder", "random", "--data", str(data), "--out", str(data / "meta.json")]) == 2
    assert "inside the dataset" in capsys.readouterr().err
    (tmp_path / "r.json").write_text("{}")
    assert atcrl(["probe", "--encoder", "random", "--data", str(data), "--out", str(tmp_path / "r.json")]) == 2
    assert "--force" in capsys.readouterr().err
    assert snapshot(data) == before and (tmp_path / "r.json").read_text() == "{}"


def test_unwritable_targets_are_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr("os.access", lambda path, mode: False)  # root may write anywhere: pretend it may not
    with pytest.raises(OutputError, match=f"{tmp_path} is not writable"):
        check_outputs([tmp_path / "sub" / "x.json"], force=False)


def test_evaluate_video_follows_the_same_rule(tmp_path, capsys):
    (tmp_path / "v.gif").write_bytes(b"GIF89a")
    assert atcrl(["evaluate", "--run", str(tmp_path / "no-run"), "--video", str(tmp_path / "v.gif")]) == 2
    assert "already exist" in capsys.readouterr().err and (tmp_path / "v.gif").read_bytes() == b"GIF89a"


def test_a_projects_own_config_json_does_not_make_it_a_run(runs, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    assert protected_owner(tmp_path / "encoders" / "e.json") is None
    assert protected_owner(runs[0] / "sub" / "e.json") == (runs[0], "run directory")
