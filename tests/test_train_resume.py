"""`atcrl train --resume`: kill -9 then resume continues exactly; settings must agree; nothing is overwritten."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reltools import kill_9_after_checkpoint

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.metrics_log import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SAC = ["--env", "tiny:point", "--sac.image-size", "32", "--sac.frame-stack", "1", "--sac.warmup-steps", "50",
       "--sac.batch-size", "32", "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8",
       "--sac.replay-capacity", "2000", "--sac.log-every", "50", "--eval-every", "100", "--eval-episodes", "2",
       "--no-tensorboard"]
PPO = ["--env", "tiny:catch", "--ppo.image-size", "32", "--ppo.encoder", "dmc", "--ppo.num-envs", "4",
       "--ppo.horizon", "32", "--ppo.ul-start-steps", "0", "--ppo.rl-start-steps", "128", "--ppo.ul-replay-size", "800",
       "--ppo.atc.batch-size", "32", "--ppo.agent.hidden", "32", "--ppo.agent.minibatches", "2",
       "--eval-episodes", "0", "--no-tensorboard"]


def final_state(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints", kind="train").state


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def eval_curve(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["eval/return_mean"]) for r in read_jsonl(run / "metrics.jsonl") if "eval/return_mean" in r]


@pytest.mark.parametrize("replay", [[], ["--sac.device-replay", "True"]], ids=["host-replay", "device-replay"])
def test_kill_9_then_resume_continues_at_the_checkpoint_and_ends_like_the_uninterrupted_run(tmp_path, capsys, replay):
    # Checkpoints every 50 steps fall on tiny:point's episode ends (50 steps), and the replay is saved,
    # so the resumed run must reproduce the uninterrupted one bit for bit (with the replay on the host, or on
    # the device, here the CPU: the same sampler and checkpoint code a GPU runs).
    args = [*SAC, "--steps", "400", "--ckpt-every", "50", "--checkpoint-replay", *replay]
    killed = tmp_path / "killed"
    last = kill_9_after_checkpoint(["train", *args], killed, 150)
    assert 150 <= last < 400

    assert atcrl(["train", *args, "--out", str(killed)]) == 2  # never reused without --resume
    assert "already exists and is not empty" in capsys.readouterr().err
    assert atcrl(["train", "--resume", str(killed)]) == 0
    assert f"resuming {killed} at step {last}" in capsys.readouterr().err

    straight = tmp_path / "straight"
    assert atcrl(["train", *args, "--out", str(straight)]) == 0
    resumed, reference = final_state(killed), final_state(straight)
    assert resumed["step"] == reference["step"] == 400
    assert resumed["run"]["agent"]["updates"] == reference["run"]["agent"]["updates"] == 350
    assert same_tensors(resumed["run"]["agent"]["modules"], reference["run"]["agent"]["modules"])
    assert same_tensors(resumed["run"]["objective"], reference["run"]["objective"])
    assert eval_curve(killed) == eval_curve(straight) and len(eval_curve(killed)) == 5
    steps = [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if "rl/episodes" in r]
    assert steps == sorted(set(steps)) == list(range(50, 401, 50))  # no step logged twice


def test_resume_without_the_replay_refills_it_and_refuses_other_settings(tmp_path, capsys):
    run = tmp_path / "run"
    args = [*SAC, "--steps", "200", "--ckpt-every", "100"]
    assert atcrl(["train", *args, "--stop-after", "100", "--out", str(run)]) == 0
    assert final_state(run)["step"] == 100 and final_state(run)["run"]["agent"]["updates"] == 50

    # Flags that change the run are refused, naming each field; session flags may change.
    assert atcrl(["train", "--resume", str(run), "--sac.batch-size", "64", "--steps", "300"]) == 2
    err = capsys.readouterr().err
    assert "batch_size: 32 (run) vs 64 (now)" in err and "steps: 200 (run) vs 300 (now)" in err
    assert atcrl(["train", "--resume", str(run), "--sac.batch-size", "32", "--device", "cpu"]) == 0

    end = final_state(run)
    # The replay restarts empty: updates wait for a batch (32 transitions) after the resume.
    assert end["step"] == 200 and 50 + 100 - 32 - 1 <= end["run"]["agent"]["updates"] < 150
    config = json.loads((run / "config.json").read_text())
    assert config["loop"]["batch_size"] == 32 and config["loop"]["steps"] == 200
    assert atcrl(["train", "--resume", str(run)]) == 0  # a finished run stays finished
    assert final_state(run)["step"] == 200


def test_a_checkpoint_of_another_run_or_a_run_without_one_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for run, seed in ((a, "0"), (b, "1")):
        assert atcrl(["train", *SAC, "--steps", "100", "--stop-after", "50", "--seed", seed, "--out", str(run)]) == 0
    shutil.copy(b / "checkpoints" / "ckpt_000050.pt", a / "checkpoints" / "ckpt_000060.pt")
    assert atcrl(["train", "--resume", str(a)]) == 2
    err = capsys.readouterr().err
    assert "ckpt_000060.pt was written with a different config" in err and "seed: 1 (checkpoint) vs 0 (now)" in err

    newer = torch.load(a / "checkpoints" / "ckpt_000050.pt", weights_only=True)
    newer["format_version"] += 1
    torch.save(newer, a / "checkpoints" / "ckpt_000060.pt")
    assert atcrl(["train", "--resume", str(a)]) == 2
    assert "Upgrade atcrl to resume it" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(a / "config.json", empty / "config.json")
    assert atcrl(["train", "--resume", str(empty)]) == 2
    assert "holds no checkpoint yet" in capsys.readouterr().err
    assert atcrl(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_ppo_run_resumes_at_its_iteration(tmp_path, capsys):
    run = tmp_path / "ppo"
    assert atcrl(["train", *PPO, "--steps", "512", "--ckpt-every", "128", "--stop-after", "256",
                  "--checkpoint-replay", "--out", str(run)]) == 0
    half = final_state(run)
    assert half["step"] == 256 and half["run"]["iteration"] == 2 and len(half["replay"]) == 4
    assert atcrl(["train", "--resume", str(run)]) == 0
    end = final_state(run)
    assert end["step"] == 512 and end["run"]["iteration"] == 4
    assert end["run"]["agent"]["iterations"] == 3  # RL starts at step 128: iterations 1, 2, 3
    assert end["run"]["ul"]["updates"] > half["run"]["ul"]["updates"]


def test_ctrl_c_checkpoints_after_the_current_step_and_exits_cleanly(tmp_path):
    run = tmp_path / "interrupted"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "atcrl.cli", "train", *SAC, "--steps", "2000", "--ckpt-every",
                             "1000", "--out", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not any(r.get("rl/updates", 0) > 0 for r in read_jsonl(run / "metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()  # interrupted, cleanly: the code every command's Ctrl-C exits with
    state = final_state(run)
    assert 100 <= state["step"] < 2000  # right after the step it arrived in (test_train_resume_rules pins which)
    assert f"stopped at step {state['step']} (Ctrl-C)" in err.decode() and b"agent steps" in out


def strip_loop_field(run: Path, name: str, algos: tuple[str, ...] = ("sac", "ppo")) -> None:
    """Remove a loop field from a run directory's config.json and checkpoints, as in a run written before
    the field existed."""
    info = json.loads((run / "config.json").read_text())
    for part in (info["loop"], *(info["train"][a] for a in algos)):
        del part[name]
    (run / "config.json").write_text(json.dumps(info))
    for ckpt in (run / "checkpoints").glob("*.pt"):
        payload = torch.load(ckpt, weights_only=True)
        del payload["config"][name]
        torch.save(payload, ckpt)


def test_a_run_from_before_the_fast_field_resumes_and_fast_settings_may_change_on_resume(tmp_path, capsys):
    run = tmp_path / "old"
    assert atcrl(["train", *SAC, "--steps", "150", "--ckpt-every", "50", "--stop-after", "50", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["loop"]["fast"]["channels_last"] is True
    strip_loop_field(run, "fast")  # every trace of the fast path

    assert atcrl(["train", "--resume", str(run), "--stop-after", "100"]) == 0
    assert final_state(run)["step"] == 100
    # fast changes speed, not the run: a resume may change it; a setting that changes the run is still refused.
    assert atcrl(["train", "--resume", str(run), "--sac.fast.channels-last", "False", "--sac.fast.threads", "1",
                  "--sac.fast.bf16", "True"]) == 0
    end = load_checkpoint(run / "checkpoints", kind="train")
    assert end.state["step"] == 150 and "fast" not in end.config  # the run's recorded settings stay as they were
    capsys.readouterr()
    assert atcrl(["train", "--resume", str(run), "--sac.fast.threads", "1", "--sac.n-step", "3"]) == 2
    err = capsys.readouterr().err
    assert "n_step: 1 (run) vs 3 (now)" in err and "fast" not in err


def same_tree(a, b) -> bool:
    """Equal nested state (dicts, lists, tensors bit for bit, plain values)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b))
    return a == b
