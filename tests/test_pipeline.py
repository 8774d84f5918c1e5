"""The offline pipeline through the CLI on real dm_control at a tiny size:
train an expert -> collect its demonstrations -> validate -> pretrain ATC -> frozen RL on that encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.data.dataset import open_dataset
from atcrl.data.episode import stacked_frames
from atcrl.encoder_io import load_encoder
from atcrl.train.evaluate import actor
from atcrl.train.rl_checkpoint import load_trained

SIZE = 32
# Cartpole acts every 8 physics steps, so an episode is 125 agent steps.
SAC = ["--env", "dmc:cartpole-swingup", "--sac.image-size", str(SIZE), "--sac.fast-render", "True",
       "--sac.batch-size", "32", "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8",
       "--sac.replay-capacity", "1000", "--sac.log-every", "125", "--eval-every", "0", "--eval-episodes", "1",
       "--no-tensorboard"]


def test_expert_collect_validate_pretrain_frozen(tmp_path, capsys):
    pytest.importorskip("dm_control")
    expert, data, pre, frozen = (tmp_path / n for n in ("expert", "data", "pretrain", "frozen"))

    assert atcrl(["train", *SAC, "--steps", "250", "--sac.warmup-steps", "125", "--out", str(expert)]) == 0
    assert atcrl(["collect", "--checkpoint", str(expert), "--episodes", "2", "--out", str(data)]) == 0
    ds = open_dataset(data)
    assert len(ds) == 2 and ds.meta.extra["collect"]["policy"].startswith("checkpoint:")
    ep = ds[0]
    assert len(ep) == 125 and ep.frames.shape[1:] == (3, SIZE, SIZE) and ep.physics.shape == (126, 4)
    # The recorded actions are the expert's deterministic actions on the recorded observations.
    agent = load_trained(expert).agent
    obs = stacked_frames(ep.frames, np.arange(5), 3)
    assert np.array_equal(np.stack([actor(agent)(o) for o in obs]), ep.actions[:5])

    assert atcrl(["dataset", "validate", str(data)]) == 0
    assert atcrl(["pretrain", "--data", str(data), "--out", str(pre), "--updates", "20", "--batch-size", "32",
                  "--val-fraction", "0", "--no-tensorboard"]) == 0
    encoder = load_encoder(pre)
    assert encoder.in_shape == (9, SIZE, SIZE)

    assert atcrl(["train", *SAC, "--preset", "dmc-frozen", "--encoder", str(pre), "--steps", "150",
                  "--sac.warmup-steps", "100", "--out", str(frozen)]) == 0
    state = load_checkpoint(frozen / "checkpoints", kind="train").state
    weights = state["run"]["agent"]["modules"]
    assert state["step"] == 150 and state["run"]["agent"]["updates"] == 50
    assert all(torch.equal(weights["encoder." + k], v) for k, v in encoder.state_dict().items())
    summary = json.loads((frozen / "summary.json").read_text())
    assert summary["preset"] == "dmc-frozen" and np.isfinite(summary["last_eval_return"])
    capsys.readouterr()
    assert atcrl(["evaluate", "--run", str(frozen), "--episodes", "1"]) == 0
    assert "1 deterministic episodes: return" in capsys.readouterr().out
