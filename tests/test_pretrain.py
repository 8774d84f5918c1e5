"""Offline pretraining end to end on a tiny recorded dataset: outputs, resume equality, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from atcrl.checkpoint import list_checkpoints, load_checkpoint
from atcrl.data.dataset import DatasetWriter, meta_from_env
from atcrl.data.episode import Episode
from atcrl.encoder_io import load_encoder
from atcrl.envs import make_env
from atcrl.metrics_log import read_jsonl
from atcrl.nets.encoders import ConvEncoder
from atcrl.train.pretrain import PretrainConfig, PretrainError, resolve_settings, run_pretrain
from atcrl.train.pretrain_step import PretrainStep

IMAGE = 40
ROOT = Path(__file__).resolve().parents[1]


def record_dataset(path: Path, spec: str = "tiny:point", *, episodes: int = 6, seed: int = 0,
                   task: str | None = None) -> Path:
    """Record random-action episodes of a tiny pixel env into an atcrl dataset."""
    env = make_env(spec, seed=seed, image_size=IMAGE)
    meta = meta_from_env(env)
    if task is not None:
        meta = replace(meta, tasks=(task,))
    writer = DatasetWriter(path, meta)
    c = meta.frame_channels
    for e in range(episodes):
        obs, info = env.reset(seed=seed * 1000 + e)
        frames, physics, actions, rewards = [obs[-c:]], [info["physics"]], [], []
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            frames.append(obs[-c:])
            physics.append(info["physics"])
            actions.append(action)
            rewards.append(reward)
            done = terminated or truncated
        writer.add(Episode(np.stack(frames), np.asarray(actions, dtype=meta.action_dtype),
                           np.asarray(rewards, np.float32), bool(terminated), bool(truncated),
                           np.stack(physics), task=meta.tasks[0]))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The machine is shared: one intra-op thread per test process is faster than oversubscribing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def point_data(tmp_path_factory) -> Path:
    return record_dataset(tmp_path_factory.mktemp("data") / "point")


def small(data: Path | tuple[Path, ...], out: Path, **overrides) -> PretrainConfig:
    data = data if isinstance(data, tuple) else (data,)
    base = {"data": tuple(str(d) for d in data), "out": str(out), "updates": 20, "batch_size": 16,
            "log_every": 5, "eval_every": 10, "ckpt_every": 10, "val_fraction": 0.34, "val_batches": 2,
            "tensorboard": False, "seed": 3}
    return PretrainConfig(**{**base, **overrides})


def encoder_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "encoder.safetensors")


def final_state(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints", kind="pretrain").state


def assert_same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference_run(point_data, tmp_path_factory) -> Path:
    """An uninterrupted run that the resumed runs must reproduce exactly."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert run_pretrain(small(point_data, out)) == 0
    return out


def test_run_writes_everything_and_trains(reference_run, point_data):
    run = reference_run
    rows = read_jsonl(run / "metrics.jsonl")
    train = [r for r in rows if "ul/loss" in r]
    val = [r for r in rows if "val/loss" in r]
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    assert [r["step"] for r in val] == [10, 20]
    assert all(0.0 <= r["val/accuracy"] <= 1.0 for r in val)
    assert all(0.0 <= r["ul/accuracy"] <= 1.0 and r["perf/updates_per_s"] > 0 for r in train)
    assert train[-1]["ul/lr"] < train[0]["ul/lr"]  # cosine annealing after the warm-up
    assert (run / "metrics.csv").read_text().startswith("step,time,")
    info = json.loads((run / "config.json").read_text())
    # Validation holds out whole episodes: 2 of the 6 recorded 50-step episodes.
    assert (info["train_steps"], info["val_steps"]) == (200, 100)
    assert info["in_shape"] == [9, IMAGE, IMAGE] and info["tasks"] == ["tiny:point"]

    state = final_state(run)
    assert state["update"] == 20 and state["world_size"] == 1
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [10, 20]
    enc = load_encoder(run, expect_in_shape=(9, IMAGE, IMAGE), expect_arch="dmc")
    meta = json.loads((run / "encoder.json").read_text())
    assert meta["objective"] == "atc" and meta["data"] == [str(point_data.resolve())]
    # The exported weights are the trained online encoder, not its initialisation or its momentum copy.
    trained = {k.removeprefix("encoder."): v for k, v in state["objective"].items() if k.startswith("encoder.")}
    assert_same_state(enc.state_dict(), trained)
    torch.manual_seed(3)
    init = ConvEncoder("dmc", (9, IMAGE, IMAGE)).state_dict()
    assert not torch.equal(init["convs.0.weight"], trained["convs.0.weight"])
    target = state["objective"]["target_encoder.convs.0.weight"]
    assert not torch.equal(target, trained["convs.0.weight"])


def test_crash_then_resume_equals_uninterrupted(reference_run, point_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_step = PretrainStep.__call__
    calls = {"n": 0}

    def crash_at_update_17(self, update):
        calls["n"] += 1
        if calls["n"] == 17:  # after the checkpoint at 10 and the log record at 15
            raise RuntimeError("simulated crash")
        return real_step(self, update)

    monkeypatch.setattr(PretrainStep, "__call__", crash_at_update_17)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pretrain(small(point_data, out))
    monkeypatch.setattr(PretrainStep, "__call__", real_step)
    assert not (out / "encoder.safetensors").exists()
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")][-1] == 15

    assert run_pretrain(small(point_data, out, resume=True, log_every=5)) == 0
    assert_same_state(encoder_weights(out), encoder_weights(reference_run))
    assert_same_state(final_state(out)["objective"], final_state(reference_run)["objective"])
    assert_same_state(final_state(out)["optimizer"], final_state(reference_run)["optimizer"])
    steps = [(r["step"], "val/loss" in r) for r in read_jsonl(out / "metrics.jsonl")]
    ref_steps = [(r["step"], "val/loss" in r) for r in read_jsonl(reference_run / "metrics.jsonl")]
    assert steps == ref_steps  # the records logged after the checkpoint were dropped, not duplicated


def test_ctrl_c_checkpoints_after_the_current_update_and_resume_equals_uninterrupted(
        reference_run, point_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_step = PretrainStep.__call__
    calls = {"n": 0}

    def ctrl_c_during_update_13(self, update):
        calls["n"] += 1
        if calls["n"] == 13:  # between the checkpoints at 10 and 20
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, update)

    monkeypatch.setattr(PretrainStep, "__call__", ctrl_c_during_update_13)
    previous = signal.getsignal(signal.SIGINT)
    assert run_pretrain(small(point_data, out)) == 130
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is gone again
    assert "stopped at update 13 of 20 (Ctrl-C)" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(out / "checkpoints")][-1] == 13  # the update it was in finished
    assert not (out / "encoder.safetensors").exists()
    monkeypatch.setattr(PretrainStep, "__call__", real_step)
    assert run_pretrain(small(point_data, out, resume=True)) == 0
    assert_same_state(encoder_weights(out), encoder_weights(reference_run))
    assert_same_state(final_state(out)["objective"], final_state(reference_run)["objective"])
    assert_same_state(final_state(out)["optimizer"], final_state(reference_run)["optimizer"])


def test_kill_9_mid_run_then_resume(reference_run, point_data, tmp_path):
    out = tmp_path / "run"
    cfg = small(point_data, out, ckpt_every=5, keep_checkpoints=10)
    args = [sys.executable, "-m", "atcrl.train.pretrain", "--data", cfg.data[0], "--out", str(out),
            "--updates", "20", "--batch-size", "16", "--log-every", "5", "--eval-every", "10",
            "--ckpt-every", "5", "--keep-checkpoints", "10", "--val-fraction", "0.34", "--val-batches", "2",
            "--no-tensorboard", "--seed", "3"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / "checkpoints" / "ckpt_000005.pt").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"pretrain subprocess ended early: {proc.stderr.read().decode()}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "encoder.safetensors").exists()  # killed mid-run, so the resume has work to do
    assert run_pretrain(replace(cfg, resume=True)) == 0
    assert_same_state(encoder_weights(out), encoder_weights(reference_run))
    assert_same_state(final_state(out)["objective"], final_state(reference_run)["objective"])


def test_multitask_from_two_datasets(point_data, tmp_path):
    other = record_dataset(tmp_path / "point-b", episodes=3, seed=1, task="tiny:point-b")
    out = tmp_path / "run"
    assert run_pretrain(small((point_data, other), out, updates=4, eval_every=2, ckpt_every=4, log_every=2)) == 0
    info = json.loads((out / "config.json").read_text())
    assert info["tasks"] == ["tiny:point", "tiny:point-b"]
    # One of the 3 episodes of the second task is held out; each task gets validation episodes.
    assert (info["train_steps"], info["val_steps"]) == (200 + 100, 100 + 50)
    meta = json.loads((out / "encoder.json").read_text())
    assert len(meta["data"]) == 2 and meta["extra"]["tasks"] == info["tasks"]


def _fails_with(cfg: PretrainConfig, capsys, *needles: str) -> None:
    assert run_pretrain(cfg) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    if not cfg.resume:
        assert not Path(cfg.out).exists()  # setup errors leave no half-made run directory


def test_bad_inputs_fail_clearly_before_writing(point_data, tmp_path, capsys):
    _fails_with(small(tmp_path / "nope", tmp_path / "a"), capsys, "no dataset at", "nope")
    (tmp_path / "empty").mkdir()
    _fails_with(small(tmp_path / "empty", tmp_path / "b"), capsys, "not an atcrl dataset")
    _fails_with(small(point_data, tmp_path / "c", batch_size=500), capsys,
                f"dataset {point_data.resolve()}", "batch size 500 is larger")
    _fails_with(small(point_data, tmp_path / "d", delta_t=80), capsys, "delta_t=80 is longer than every")
    _fails_with(small(point_data, tmp_path / "e", val_fraction=0.2, batch_size=64), capsys,
                "validation split", "--val-fraction")
    _fails_with(small(point_data, tmp_path / "g", objective="no-such"), capsys, "unknown UL objective 'no-such'")
    catch = record_dataset(tmp_path / "catch", "tiny:catch", episodes=2)
    _fails_with(small((point_data, catch), tmp_path / "f"), capsys, "differ in (frame shape", str(catch.resolve()))


def test_run_dir_and_resume_guards(reference_run, point_data, tmp_path, capsys):
    assert run_pretrain(small(point_data, reference_run)) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_pretrain(small(point_data, reference_run, resume=True, updates=30)) == 2
    assert "differing fields: updates: 20 (checkpoint) vs 30 (now)" in capsys.readouterr().err
    assert run_pretrain(small(point_data, tmp_path / "never-ran", resume=True)) == 2
    assert "cannot resume" in capsys.readouterr().err
    (tmp_path / "no-ckpt").mkdir()
    (tmp_path / "no-ckpt" / "metrics.jsonl").write_text("")
    assert run_pretrain(small(point_data, tmp_path / "no-ckpt", resume=True)) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


@pytest.mark.parametrize(
    "preset, arch, delta_t, batch, updates, shift, latent",
    [("dmc", "dmc", 1, 256, 10_000, 1.0, 128), ("atari", "atari", 3, 512, 20_000, 0.1, 256),
     ("dmlab", "dmlab", 3, 512, 30_000, 0.1, 256)],
)
def test_presets_follow_the_paper(preset, arch, delta_t, batch, updates, shift, latent):
    s = resolve_settings(PretrainConfig(data=("x",), preset=preset))
    assert (s.encoder, s.objective.delta_t, s.objective.batch_size, s.optim.total_updates) == (
        arch, delta_t, batch, updates)
    assert (s.objective.shift_prob, s.objective.latent_size) == (shift, latent)
    assert (s.optim.lr, s.optim.warmup_updates, s.optim.schedule, s.optim.grad_clip) == (1e-3, 1000, "cosine", 10.0)
    # Atari and DMLab sample 16-step sequences (docs/reference-settings.md, "Offline pretraining"), DMC pairs.
    assert s.objective.sampling == ("pairs" if preset == "dmc" else "sequences")
    short = resolve_settings(PretrainConfig(data=("x",), preset=preset, updates=50, batch_size=32, lr=3e-4))
    assert (short.optim.total_updates, short.optim.warmup_updates, short.optim.lr) == (50, 5, 3e-4)
    assert short.objective.batch_size == 32 and short.objective.delta_t == delta_t
    if preset != "dmc":
        with pytest.raises(PretrainError, match="multiple of sequence_length"):
            resolve_settings(PretrainConfig(data=("x",), preset=preset, batch_size=8))
        pairs = resolve_settings(PretrainConfig(data=("x",), preset=preset, batch_size=8, objective_args=("sampling=pairs",)))
        assert (pairs.objective.batch_size, pairs.objective.run) == (8, 1)
