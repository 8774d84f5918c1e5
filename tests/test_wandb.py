"""Weights & Biases logging, offline (WANDB_MODE=offline): the same metrics, the config and eval videos land
in the run's W&B files, and a resumed logger continues the same W&B run."""

from __future__ import annotations

import numpy as np
import pytest

from atcrl.metrics_log import WANDB_ID, MetricsLogger, read_jsonl

pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _run_files(run_dir):
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert runs, list(run_dir.iterdir())
    return runs


def test_offline_run_holds_the_metrics_config_and_video(tmp_path):
    import imageio.v3 as iio

    video = tmp_path / "eval.gif"
    iio.imwrite(video, np.zeros((3, 16, 16, 3), np.uint8), extension=".gif")
    run = tmp_path / "run"
    with MetricsLogger(run, tensorboard=False, wandb_project="atcrl-test",
                       config={"env": "tiny:point", "sac": {"q_lr": 0.001}}) as log:
        for step in (10, 20, 30):
            log.log(step, {"rl/critic_loss": 1.0 / step, "eval/return_mean": float(step)})
        log.log_video(30, video)
    run_id = (run / WANDB_ID).read_text()
    (offline_run,) = _run_files(run)
    assert offline_run.name.endswith(run_id)
    data = (offline_run / f"run-{run_id}.wandb").read_bytes()
    for needle in (b"rl/critic_loss", b"eval/return_mean", b"eval/video", b"tiny:point", b"q_lr"):
        assert needle in data, needle
    assert data.count(b"rl/critic_loss") >= 3  # one history record per log call
    assert list((offline_run / "files" / "media").rglob("*.gif"))  # the video itself travels with the run
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [10, 20, 30]  # JSONL as always


def test_a_resumed_logger_continues_the_same_wandb_run(tmp_path):
    run = tmp_path / "run"
    with MetricsLogger(run, tensorboard=False, wandb_project="atcrl-test") as log:
        log.log(1, {"rl/x": 1.0})
    first = (run / WANDB_ID).read_text()
    with MetricsLogger(run, tensorboard=False, wandb_project="atcrl-test", resume_from_step=1) as log:
        log.log(2, {"rl/x": 2.0})
    assert (run / WANDB_ID).read_text() == first
    runs = [r.name for r in _run_files(run)]
    assert len(runs) == 2 and all(f"-{first}" in name for name in runs), runs  # two sessions of one W&B run


def test_train_with_wandb_logs_the_run_offline(tmp_path):
    from atcrl.cli import main as atcrl

    out = tmp_path / "run"
    assert atcrl(["train", "--env", "tiny:point", "--steps", "60", "--sac.image-size", "32", "--sac.frame-stack", "1",
                  "--sac.warmup-steps", "40", "--sac.batch-size", "16", "--sac.agent.hidden", "16", "16",
                  "--sac.log-every", "20", "--eval-every", "0", "--eval-episodes", "1", "--no-tensorboard",
                  "--wandb", "--wandb-project", "atcrl-test", "--out", str(out)]) == 0
    (offline_run,) = _run_files(out)
    data = next(offline_run.glob("run-*.wandb")).read_bytes()
    for needle in (b"rl/critic_loss", b"eval/return_mean", b"tiny:point", b"warmup_steps"):
        assert needle in data, needle
