"""A DQN run killed with SIGKILL resumes at its last checkpoint's step, with its replays, counters and RNGs, and
ends at the same step and update count as the uninterrupted run."""

from __future__ import annotations

from reltools import kill_9_after_checkpoint

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.metrics_log import read_jsonl

ARGS = ["--preset", "tiny-dqn", "--steps", "1200", "--dqn.num-envs", "4", "--dqn.warmup-steps", "200",
        "--dqn.batch-size", "8", "--dqn.agent.hidden", "16", "--dqn.log-every", "200", "--ckpt-every", "200",
        "--checkpoint-replay", "--eval-episodes", "0", "--no-tensorboard", "--device", "cpu"]


def test_kill_9_then_resume_continues_at_the_checkpoint_step_with_the_saved_replays(tmp_path, capsys):
    killed = tmp_path / "killed"
    last = kill_9_after_checkpoint(["train", *ARGS], killed, 600)
    assert 600 <= last < 1200
    saved = load_checkpoint(killed / "checkpoints", kind="train").state
    assert saved["step"] == last and saved["run"]["vector_step"] == last // 4 and len(saved["replay"]) == 4
    assert [int(r["written"]) for r in saved["replay"]] == [int(saved["replay"][0]["written"])] * 4

    assert atcrl(["train", "--resume", str(killed)]) == 0
    assert f"resuming {killed} at step {last}" in capsys.readouterr().err
    straight = tmp_path / "straight"
    assert atcrl(["train", *ARGS, "--out", str(straight)]) == 0
    resumed = load_checkpoint(killed / "checkpoints", kind="train").state
    reference = load_checkpoint(straight / "checkpoints", kind="train").state
    assert resumed["step"] == reference["step"] == 1200
    # The replays came back, so updates resumed at once: the same count as without the kill ((1200 - 200) / 2, the preset's train_every).
    assert resumed["run"]["agent"]["updates"] == reference["run"]["agent"]["updates"] == 500
    assert resumed["run"]["episodes"] >= saved["run"]["episodes"]
    steps = [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if "rl/episodes" in r]
    assert steps == sorted(set(steps)) == list(range(200, 1201, 200))  # no step logged twice
