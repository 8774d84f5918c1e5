"""`atcrl export`: a run's checkpoint -> a standalone encoder that loads with load_encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.encoder_io import load_encoder
from atcrl.envs import make_env
from atcrl.train.collect import collect_episodes, random_policy

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    space = make_env("tiny:point", image_size=SIZE).action_space
    return collect_episodes("tiny:point", 3, random_policy(space), out=tmp_path_factory.mktemp("d") / "point",
                            image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "atc"
    assert atcrl(["pretrain", "--data", str(data), "--out", str(out), "--updates", "6", "--ckpt-every", "3",
                  "--batch-size", "16", "--val-fraction", "0", "--no-tensorboard"]) == 0
    return out


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_latest_checkpoint_exports_the_encoder_the_run_ended_with(run, tmp_path):
    assert atcrl(["export", "--run", str(run), "--out", str(tmp_path / "latest.safetensors")]) == 0
    exported = load_encoder(tmp_path / "latest.safetensors")
    assert same_weights(exported, load_encoder(run))
    info = json.loads((tmp_path / "latest.json").read_text())
    assert info["objective"] == "atc" and info["extra"]["updates"] == 6 and info["in_shape"] == [9, SIZE, SIZE]
    assert info["extra"]["checkpoint"].endswith("ckpt_000006.pt")


def test_a_chosen_step_exports_that_checkpoints_online_encoder(run, tmp_path):
    assert atcrl(["export", "--run", str(run), "--checkpoint", "3", "--out", str(tmp_path / "three")]) == 0
    exported = load_encoder(tmp_path / "three")
    state = load_checkpoint(run / "checkpoints" / "ckpt_000003.pt", kind="pretrain").state["objective"]
    assert all(torch.equal(v, state["encoder." + k]) for k, v in exported.state_dict().items())
    assert not same_weights(exported, load_encoder(run))
    assert json.loads((tmp_path / "three" / "encoder.json").read_text())["extra"]["updates"] == 3


def test_errors_say_what_is_missing(run, data, tmp_path, capsys):
    def fails(args, *needles):
        assert atcrl(["export", *map(str, args), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err
        assert not (tmp_path / "x").exists()

    fails(["--run", tmp_path / "nope"], "does not exist")
    (tmp_path / "empty").mkdir()
    fails(["--run", tmp_path / "empty"], "no config.json")
    fails(["--run", run, "--checkpoint", "4"], "ckpt_000004.pt does not exist")
    random_run = tmp_path / "random"
    assert atcrl(["pretrain", "--data", str(data), "--objective", "random", "--out", str(random_run),
                  "--no-tensorboard"]) == 0
    fails(["--run", random_run], "no checkpoint", "objective random trains nothing", "encoder.safetensors")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"kind": "something-else"}))
    fails(["--run", other], "'something-else' run", "pretrain")
