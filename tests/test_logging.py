"""Metrics logger (JSONL, CSV, TensorBoard, resume truncation) and the non-TTY progress display."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from atcrl.metrics_log import MetricsLogger, read_jsonl
from atcrl.progress import Progress


def _lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_jsonl_and_csv_content(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(10, {"ul/loss": 2.5, "ul/accuracy": np.float32(0.25)})
        log.log(20, {"ul/loss": torch.tensor(1.5), "perf/updates_per_s": 3})
        log.log(30, {"ul/loss": float("nan")})
    rows = _lines(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[0]["ul/accuracy"] == 0.25 and rows[1]["ul/loss"] == 1.5
    assert rows[2]["ul/loss"] is None  # NaN is not valid JSON
    assert all(isinstance(r["time"], float) for r in rows)
    assert rows[0]["time"] <= rows[1]["time"] <= rows[2]["time"]
    with open(tmp_path / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["step", "time", "ul/loss", "ul/accuracy", "perf/updates_per_s"]
    assert [t["step"] for t in table] == ["10", "20", "30"]
    assert table[0]["perf/updates_per_s"] == "" and table[1]["perf/updates_per_s"] == "3.0"
    assert table[1]["ul/accuracy"] == ""


def test_reserved_names_are_refused(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log, pytest.raises(ValueError, match="reserved"):
        log.log(1, {"step": 3.0})


def test_resume_drops_records_after_the_checkpoint(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in (100, 200, 300):
        log.log(step, {"ul/loss": step / 100})
    log._file.write('{"step": 400, "ul/lo')  # a kill -9 in the middle of a write
    log._file.flush()
    # Crash: no close(). The run resumes from its checkpoint at step 200.
    with MetricsLogger(tmp_path, tensorboard=False, resume_from_step=200) as log2:
        log2.log(300, {"ul/loss": 0.5})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["ul/loss"]) for r in rows] == [(100, 1.0), (200, 2.0), (300, 0.5)]
    with open(tmp_path / "metrics.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["100", "200", "300"]


def test_disabled_logger_writes_nothing(tmp_path):
    log = MetricsLogger(tmp_path / "rank1", enabled=False)
    log.log(1, {"ul/loss": 1.0})
    log.close()
    assert not (tmp_path / "rank1").exists()


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path) as log:
        log.log(5, {"ul/loss": 0.75})
        log.log(6, {"ul/loss": 0.5})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("ul/loss")
    assert [(e.step, e.value) for e in events] == [(5, 0.75), (6, 0.5)]


def test_plain_progress_lines_off_a_terminal():
    out = io.StringIO()
    bar = Progress(10, initial=4, desc="pretrain", show=["ul/loss"], stream=out, interval=0.0)
    assert bar._bar is None  # StringIO is not a TTY: no carriage-return redraws
    for _ in range(6):
        bar.update(1, {"ul/loss": 0.123456, "ul/other": 1})
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and "\r" not in out.getvalue()
    assert lines[-1].startswith("pretrain: 10/10 (100%)") and "loss=0.1235" in lines[-1]
    assert "ETA" in lines[0] and "upd/s" in lines[0] and "other" not in lines[0]
    assert bar.rate > 0 and not math.isnan(bar.rate)


def test_plain_progress_is_rate_limited():
    out = io.StringIO()
    bar = Progress(1000, stream=out, interval=3600.0)
    for _ in range(999):
        bar.update()
    assert out.getvalue() == ""  # nothing until the interval passes ...
    bar.update()
    assert out.getvalue().count("\n") == 1  # ... or the run finishes


def test_progress_rate_names_what_is_counted():
    out = io.StringIO()
    bar = Progress(3, desc="collect", stream=out, interval=0.0, unit="episode")
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(" episode/s " in line and "upd/s" not in line for line in lines)
    tty_out = io.StringIO()
    with Progress(2, stream=tty_out, tty=True, unit="frame") as bar:
        bar.update(2)
    assert "frame" in tty_out.getvalue() and "upd" not in tty_out.getvalue()


def test_eta_waits_for_the_update_phase_and_then_uses_its_own_rate(monkeypatch):
    """The reproduction: 16 steps/s in the warm-up, 4.8 after it; the ETA must follow the second rate."""
    import io

    from atcrl import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.Progress(12_500, warmup=1000, stream=io.StringIO(), tty=False, unit="step")
    for _ in range(999):
        clock[0] += 1 / 16
        bar.update(1)
    assert bar.eta() == "after warm-up" and "ETA after warm-up" in bar.line()
    clock[0] += 1 / 16
    bar.update(1)  # step 1000: the update phase starts here
    for _ in range(480):
        clock[0] += 1 / 4.8
        bar.update(1)
    remaining_s = (12_500 - 1480) / 4.8  # 38 min, where the warm-up's rate alone would say 11.5 min
    seconds = 0
    for part in bar.eta().split(":"):  # [H:]MM:SS
        seconds = 60 * seconds + int(part)
    assert abs(seconds - remaining_s) < 2, bar.eta()


def test_eta_without_a_warm_up_is_the_plain_rate(monkeypatch):
    import io

    from atcrl import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.Progress(100, initial=50, warmup=10, stream=io.StringIO(), tty=False)  # resumed past it
    clock[0] += 10
    bar.update(10)
    assert bar.eta() == "00:40"
