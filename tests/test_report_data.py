"""A report's data/ folder: the numbers `atcrl report` reads, small, from which the report is rebuilt unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tyro
from test_report import ENV, experiment, modes_experiment, pretrain_dir, probe_file, step, train_dir

from atcrl.report.cli import ReportConfig, run_report

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def build(*args: str | Path) -> int:
    return run_report(tyro.cli(ReportConfig, args=[str(a) for a in args]))


def full_experiment(root: Path) -> Path:
    """Train (one failed half-way), pretrain and probe steps, with logs and checkpoints the data must leave out."""
    root = modes_experiment(root)
    record = json.loads((root / "experiment.json").read_text())
    for s in record["steps"]:
        if s["id"] == "e2e-1":
            s["log_tail"] = "step 500\nFloatingPointError: the critic loss is NaN"
    pretrain_dir(root / "pre-atc", "atc", val_acc=0.4, val_loss=2.5)
    probe_file(root / "probe-atc.json", {"cartpole": [0.5, 0.3]})
    (root / "runs/atc-0/checkpoints").mkdir()
    (root / "runs/atc-0/checkpoints/step_1000.pt").write_bytes(b"\0" * 100_000)
    record["steps"] += [step("pre-atc", "pretrain", "pretrain", "atc", 0, "pre-atc"),
                        step("probe-atc", "probe", "probe", "atc", 0, "probe-atc.json", env=ENV)]
    (root / "experiment.json").write_text(json.dumps(record))
    return root


def test_the_report_from_saved_data_equals_the_report_from_the_experiment(tmp_path):
    exp = full_experiment(tmp_path / "exp")
    assert build(exp, "--out", tmp_path / "direct") == 0
    assert build(exp, "--out", tmp_path / "published", "--save-data") == 0
    data = tmp_path / "published" / "data"
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    assert "runs/atc-0/eval.csv" in files and "runs/atc-0/summary.json" in files and "pre-atc/pretrain.csv" in files
    assert "probe-atc.json" in files and "experiment.json" in files
    assert not any("checkpoints" in f or f.endswith((".log", "metrics.jsonl")) for f in files)
    assert sum((data / f).stat().st_size for f in files) < 30_000
    assert (data / "runs/atc-1/eval.csv").read_text().splitlines() == [
        "step,time,eval/return_mean,eval/return_std", "0,1000.0,12.0,1.0", "500,1500.0,260.0,1.0",
        "1000,2000.0,540.0,1.0"]

    # Every number is the same; only the paths naming the inputs differ (both relative to the report).
    direct = (tmp_path / "direct" / "report.md").read_text()
    published = (tmp_path / "published" / "report.md").read_text()
    assert "`../exp`" in direct and "`data`" in published
    assert published == direct.replace("`../exp`", "`data`")
    assert "FloatingPointError: the critic loss is NaN" in published  # from the record's log tail


def test_a_published_report_is_rebuilt_unchanged_from_its_data_alone(tmp_path):
    assert build(full_experiment(tmp_path / "exp"), "--out", tmp_path / "published", "--save-data") == 0
    shutil.rmtree(tmp_path / "exp")  # nothing but the data folder is left
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "published" / "data", copy / "data")
    assert build(copy / "data", "--out", copy) == 0
    assert (copy / "report.md").read_text() == (tmp_path / "published" / "report.md").read_text()
    figures = sorted(p.name for p in (tmp_path / "published").glob("*.png"))
    assert figures and figures == sorted(p.name for p in copy.glob("*.png"))
    for name in figures:
        assert (copy / name).read_bytes() == (tmp_path / "published" / name).read_bytes(), name


def test_save_data_takes_one_experiment(tmp_path, capsys):
    run = train_dir(tmp_path / "run", ENV, [0.0, 1.0], repeat=8)
    assert build(run, "--out", tmp_path / "r", "--save-data") == 2
    assert "--save-data takes one experiment directory" in capsys.readouterr().err
    assert build(experiment(tmp_path / "pub" / "data", []), "--out", tmp_path / "pub", "--save-data") == 2
    assert "is the experiment itself" in capsys.readouterr().err


PUBLISHED = sorted(p.parent for p in RESULTS.glob("*/data/experiment.json"))


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_committed_reports_equal_a_fresh_rebuild(tmp_path, folder):
    copy = tmp_path / folder.name
    shutil.copytree(folder / "data", copy / "data")
    assert build(copy / "data", "--out", copy) == 0
    assert (copy / "report.md").read_text() == (folder / "report.md").read_text()
    assert sorted(p.name for p in copy.glob("*.png")) == sorted(p.name for p in folder.glob("*.png"))
