"""`atcrl train --resume` keeps the run's settings, --allow-change changes them on the record, checkpoints land
on every --ckpt-every multiple and Ctrl-C stops after the current step (tiny:point, a few hundred steps)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal

import pytest
from test_train_resume import PPO, SAC, final_state

from atcrl.checkpoint import list_checkpoints
from atcrl.cli import main as atcrl
from atcrl.metrics_log import read_jsonl
from atcrl.resumable import resumable_fields, session_fields
from atcrl.train import sac_loop
from atcrl.train.pretrain import PretrainConfig
from atcrl.train.train_plan import TrainConfig, TrainSettings, resume_plan
from atcrl.train.train_session import start_session


def steps_of(run) -> list[int]:
    return [s for s, _ in list_checkpoints(run / "checkpoints")]


def test_the_fields_that_may_change_on_resume_are_read_from_their_metadata():
    assert set(resumable_fields(sac_loop.SACLoopConfig)) == {"device", "fast", "log_every", "eval_every",
                                                             "eval_episodes", "overlap_env", "device_replay"}
    assert {"resume", "out", "device", "fast", "ckpt_every", "stop_after"} <= set(resumable_fields(PretrainConfig))
    assert "seed" not in resumable_fields(PretrainConfig)
    assert set(session_fields(TrainSettings)) == {"out", "resume", "allow_change", "device", "stop_after"}
    assert {"ckpt_every", "tensorboard", "checkpoint_replay"} <= set(resumable_fields(TrainConfig))


def test_sac_checkpoints_on_every_ckpt_every_multiple_not_only_at_log_steps(tmp_path):
    run = tmp_path / "run"  # logs every 50 steps, checkpoints every 20
    assert atcrl(["train", *SAC, "--steps", "150", "--ckpt-every", "20", "--keep-checkpoints", "20",
                  "--out", str(run)]) == 0
    assert steps_of(run) == [20, 40, 60, 80, 100, 120, 140, 150]
    assert final_state(run)["run"]["agent"]["updates"] == 100


def test_plain_resume_keeps_the_runs_checkpoint_cadence_tensorboard_replay_and_log_cadence(tmp_path, capsys):
    run = tmp_path / "run"
    assert atcrl(["train", *SAC, "--steps", "200", "--ckpt-every", "20", "--keep-checkpoints", "20",
                  "--checkpoint-replay", "--stop-after", "100", "--out", str(run)]) == 0
    assert steps_of(run)[-1] == 100 and not (run / "tb").exists()
    assert atcrl(["train", "--resume", str(run)]) == 0  # --stop-after belongs to the first session only
    assert steps_of(run) == list(range(20, 201, 20))
    assert not (run / "tb").exists()  # --no-tensorboard kept
    assert "replay" in final_state(run)  # --checkpoint-replay kept
    logged = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "rl/episodes" in r]
    assert logged == [50, 100, 150, 200]  # --sac.log-every 50 kept


def test_a_flag_given_with_resume_changes_that_session_setting(tmp_path):
    run = tmp_path / "run"
    assert atcrl(["train", *SAC, "--steps", "200", "--ckpt-every", "20", "--stop-after", "60", "--out", str(run)]) == 0
    assert atcrl(["train", "--resume", str(run), "--ckpt-every", "70", "--keep-checkpoints", "10"]) == 0
    assert steps_of(run) == [20, 40, 60, 70, 140, 200]


def test_allow_change_resumes_with_a_changed_learning_rate_and_records_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert atcrl(["train", *SAC, "--steps", "150", "--ckpt-every", "50", "--stop-after", "50", "--out", str(run)]) == 0
    capsys.readouterr()
    assert atcrl(["train", "--resume", str(run), "--sac.agent.q-lr", "5e-4"]) == 2  # a plain flag is refused
    err = capsys.readouterr().err
    assert "sac.q_lr: 0.001 (run) vs 0.0005 (now)" in err and "sac.agent.q_lr, sac.agent.pi_lr" in err
    assert "--allow-change NAME=VALUE" in err
    assert atcrl(["train", "--resume", str(run), "--allow-change", "sac.agent.seed=3"]) == 2
    assert "only sac.agent.q_lr, sac.agent.pi_lr" in capsys.readouterr().err

    # Recorded before any new checkpoint: the run still resumes from the one written with the old rate.
    resumed = resume_plan(TrainConfig(resume=str(run), allow_change=("sac.agent.q_lr=5e-4",)))
    start_session(resumed.cfg, resumed.plan, resumed.run_dir, resumed).close()
    config = json.loads((run / "config.json").read_text())
    assert config["loop"]["sac"]["q_lr"] == 5e-4 and config["train"]["sac"]["agent"]["q_lr"] == 5e-4
    assert config["history"] == [{"step": 50, "allowed_changes": {"sac.q_lr": [0.001, 0.0005]}}]
    assert atcrl(["train", "--resume", str(run), "--stop-after", "100"]) == 0
    assert "resuming" in capsys.readouterr().err
    opt = final_state(run)["run"]["agent"]["critic_opt"]
    assert final_state(run)["step"] == 100 and opt["param_groups"][0]["lr"] == 5e-4  # the optimizer uses it
    assert atcrl(["train", "--resume", str(run)]) == 0 and final_state(run)["step"] == 150


def test_the_divergence_message_prints_a_shell_quoted_command_that_resumes(tmp_path, capsys):
    run = tmp_path / "a run dir"  # a space, so the printed path must be quoted
    # alpha = 1e38 makes the soft target ~1e38, whose square overflows float32 on the first update.
    assert atcrl(["train", *SAC, "--steps", "200", "--ckpt-every", "50", "--sac.agent.initial-alpha", "1e38",
                  "--out", str(run)]) == 3
    err = capsys.readouterr().err
    command = re.search(r"lower learning rates: `([^`]*)`", err).group(1)
    words = shlex.split(command)
    assert words[:4] == ["atcrl", "train", "--resume", str(run)]
    assert atcrl(words[1:]) == 3  # accepted (not refused with 2); this alpha diverges again
    history = json.loads((run / "config.json").read_text())["history"]
    assert history[0]["allowed_changes"] == {"sac.q_lr": [0.001, 0.0005], "sac.pi_lr": [0.001, 0.0005]}


@pytest.mark.parametrize("at", [73, 121])
def test_ctrl_c_stops_after_the_current_step_with_a_checkpoint(tmp_path, capsys, monkeypatch, at):
    build_run = sac_loop.build_run

    def build_with_ctrl_c(cfg, **kwargs):
        run = build_run(cfg, **kwargs)
        env_step, calls = run.env.step, [0]

        def step(action):
            calls[0] += 1
            if calls[0] == at:  # Ctrl-C arrives while the agent takes step `at`
                os.kill(os.getpid(), signal.SIGINT)
            return env_step(action)
        run.env.step = step
        return run

    monkeypatch.setattr(sac_loop, "build_run", build_with_ctrl_c)
    run = tmp_path / "run"
    assert atcrl(["train", *SAC, "--steps", "400", "--ckpt-every", "1000", "--out", str(run)]) == 130
    assert steps_of(run) == [at]
    assert f"stopped at step {at} (Ctrl-C)" in capsys.readouterr().err


def test_allow_change_works_for_ppo_too(tmp_path):
    run = tmp_path / "ppo"
    assert atcrl(["train", *PPO, "--steps", "384", "--ckpt-every", "128", "--stop-after", "256", "--out", str(run)]) == 0
    assert atcrl(["train", "--resume", str(run), "--allow-change", "ppo.agent.lr=1e-4"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["loop"]["ppo"]["lr"] == 1e-4
    assert config["history"] == [{"step": 256, "allowed_changes": {"ppo.lr": [2.5e-4, 1e-4]}}]
    end = final_state(run)
    lr = end["run"]["agent"]["optimizer"]["param_groups"][0]["lr"]
    assert end["step"] == 384 and lr == pytest.approx(1e-4 * (1 - 2 / 3))  # annealed from the new rate
