"""`atcrl pretrain --objective X` for every objective, on discrete (tiny:catch) and continuous (tiny:point) data.

Each run is a few updates at 40 px: the point is that every objective is built with the dataset's
action space, samples what it needs, updates and exports, not that it learns.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.data.dataset import DatasetWriter, open_dataset
from atcrl.encoder_io import load_encoder
from atcrl.metrics_log import read_jsonl
from atcrl.nets.encoders import ConvEncoder
from atcrl.train.collect import collect_episodes, random_policy
from atcrl.train.pretrain import PretrainConfig, resolve_settings
from atcrl.ul.random_encoder import seeded_init
from atcrl.ul.registry import OBJECTIVE_NAMES

IMAGE = 40
UPDATES = 3
# Sizes that fit 9-step catch episodes and 40 px frames; the objectives' defaults are the paper's.
SMALL_ARGS = {
    "atc": ["--batch-size", "16"],
    "ac": ["--batch-size", "16"],
    "ats": ["--batch-size", "16"],
    "cpc": ["--batch-size", "4", "--objective-args", "length=4", "burn_in=2", "latent_size=32", "rnn_size=32"],
    "stdim": ["--batch-size", "8"],
    "vae": ["--batch-size", "16", "--delta-t", "1", "--objective-args", "latent_size=16"],
    "pixel-control": ["--batch-size", "4", "--objective-args", "length=4", "crop=40", "cell=4", "hidden=32"],
    "inverse": ["--batch-size", "16", "--objective-args", "hidden=32"],
    "random": [],
}


def record(path: Path, spec: str, episodes: int) -> Path:
    from atcrl.envs import make_env

    space = make_env(spec, image_size=IMAGE).action_space
    return collect_episodes(spec, episodes, random_policy(space), out=path, seed=1, image_size=IMAGE,
                            progress=False)


@pytest.fixture(scope="module")
def catch(tmp_path_factory) -> Path:
    return record(tmp_path_factory.mktemp("data") / "catch", "tiny:catch", 8)


@pytest.fixture(scope="module")
def point(tmp_path_factory) -> Path:
    return record(tmp_path_factory.mktemp("data") / "point", "tiny:point", 3)


def pretrain(data: Path | list[Path], out: Path, objective: str, *extra: str) -> int:
    data = data if isinstance(data, list) else [data]
    return atcrl(["pretrain", "--data", *map(str, data), "--out", str(out), "--objective", objective,
                  "--updates", str(UPDATES), "--val-fraction", "0", "--no-tensorboard", "--log-every", "1",
                  *SMALL_ARGS[objective], *extra])


def test_every_objective_has_small_test_settings():
    assert set(SMALL_ARGS) == set(OBJECTIVE_NAMES)


def check_trained(out: Path, objective: str) -> dict:
    info = json.loads((out / "encoder.json").read_text())
    assert info["objective"] == objective and info["extra"]["updates"] == UPDATES
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "ul/loss" in r]
    assert [r["step"] for r in records] == list(range(1, UPDATES + 1))
    assert all(math.isfinite(r["ul/loss"]) for r in records)
    load_encoder(out)  # the export is complete and loadable
    return load_checkpoint(out / "checkpoints", kind="pretrain").state


@pytest.mark.parametrize("objective", [o for o in OBJECTIVE_NAMES if o != "random"])
def test_objective_trains_on_discrete_actions(catch, tmp_path, objective):
    out = tmp_path / objective
    assert pretrain(catch, out, objective) == 0
    state = check_trained(out, objective)
    assert state["update"] == UPDATES
    if objective == "inverse":
        # One logit per (step, action): Δt=3 steps x 3 catch actions, read from the dataset meta.
        assert state["objective"]["head.2.weight"].shape[0] == 3 * 3


@pytest.mark.parametrize("objective", [o for o in OBJECTIVE_NAMES if o not in ("random", "pixel-control")])
def test_objective_trains_on_continuous_actions(point, tmp_path, objective):
    out = tmp_path / objective
    assert pretrain(point, out, objective) == 0
    state = check_trained(out, objective)
    if objective == "inverse":
        assert state["objective"]["head.2.weight"].shape[0] == 3 * 2  # Δt=3 steps x 2 action values
    if objective == "cpc":
        lstm_in = 32 + 2 + 1  # latent + continuous action + reward
        assert state["objective"]["rnn.weight_ih_l0"].shape[1] == lstm_in


def test_pixel_control_refuses_continuous_actions_before_writing(point, tmp_path, capsys):
    out = tmp_path / "pc"
    assert pretrain(point, out, "pixel-control") == 2
    err = capsys.readouterr().err
    assert "pixel-control" in err and "discrete action space" in err
    assert not out.exists()


def rewrite(src: Path, dst: Path, task: str, actions=lambda a: a, **meta_changes) -> Path:
    """A copy of dataset ``src`` as another task, with ``meta_changes`` and its actions mapped by ``actions``."""
    ds = open_dataset(src)
    writer = DatasetWriter(dst, replace(ds.meta, tasks=(task,), **meta_changes))
    for ep in ds:
        writer.add(replace(ep, actions=actions(ep.actions), task=task))
    return dst


def test_multitask_objectives_get_the_largest_action_size(point, tmp_path):
    narrow = rewrite(point, tmp_path / "narrow", "point-1d", lambda a: a[:, :1], action_shape=(1,))
    out = tmp_path / "inv"
    assert pretrain([point, narrow], out, "inverse") == 0
    assert json.loads((out / "config.json").read_text())["tasks"] == ["tiny:point", "point-1d"]
    state = load_checkpoint(out / "checkpoints", kind="pretrain").state
    assert state["objective"]["head.2.weight"].shape[0] == 3 * 2  # padded to tiny:point's 2 values


def test_discrete_data_without_num_actions_is_refused_by_action_objectives(catch, tmp_path, capsys):
    unknown = rewrite(catch, tmp_path / "unknown", "catch-n", num_actions=None)
    assert pretrain(unknown, tmp_path / "inv", "inverse") == 2
    assert "does not record num_actions" in capsys.readouterr().err
    assert pretrain(unknown, tmp_path / "atc", "atc") == 0  # reads no actions


def test_random_objective_exports_the_seeded_untrained_encoder(catch, tmp_path):
    out = tmp_path / "random"
    assert pretrain(catch, out, "random", "--seed", "7") == 0
    assert not (out / "checkpoints").exists()
    info = json.loads((out / "encoder.json").read_text())
    assert info["objective"] == "random" and info["extra"]["updates"] == 0
    encoder = load_encoder(out)
    expected = seeded_init(ConvEncoder("dmc", encoder.in_shape), 7)
    assert all(torch.equal(v, expected[k]) for k, v in encoder.state_dict().items())
    again = tmp_path / "random-again"
    assert pretrain(catch, again, "random", "--seed", "7") == 0
    other = load_encoder(again).state_dict()
    assert all(torch.equal(v, other[k]) for k, v in encoder.state_dict().items())


def test_objective_args_are_typed_and_checked(capsys, tmp_path, catch):
    cfg = PretrainConfig(data=("x",), objective="cpc", objective_args=("length=4", "burn_in=2", "max_offset=none"))
    s = resolve_settings(cfg)
    assert (s.objective.length, s.objective.burn_in, s.objective.max_offset) == (4, 2, None)
    atc = resolve_settings(PretrainConfig(data=("x",), objective_args=("use_W=false", "similarity=cosine",
                                                                       "target_tau=1")))
    assert (atc.objective.use_W, atc.objective.similarity, atc.objective.target_tau) == (False, "cosine", 1.0)
    for bad, needle in [("length=4.5", "expected int"), ("nope=1", "has no setting 'nope'"),
                        ("length", "NAME=VALUE"), ("length=1", "length must be >= 2")]:
        out = tmp_path / bad.replace("=", "_").replace(".", "_")
        assert atcrl(["pretrain", "--data", str(catch), "--out", str(out), "--objective", "cpc",
                      "--objective-args", bad]) == 2
        assert needle in capsys.readouterr().err
        assert not out.exists()
