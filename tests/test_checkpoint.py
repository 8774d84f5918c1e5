"""Checkpoints: atomic, versioned, state-dict-only; RNG round trip; run dirs; encoder export/import."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pytest
import torch

import atcrl.checkpoint as ckpt
from atcrl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prepare_run_dir,
    rng_state,
    save_checkpoint,
    save_rotating,
    set_rng_state,
)
from atcrl.encoder_io import encoder_info, export_encoder, load_encoder
from atcrl.nets.encoders import ConvEncoder


class Mode(str, Enum):
    fast = "fast"
    slow = "slow"


@dataclass(frozen=True)
class Cfg:
    mode: Mode = Mode.fast
    lr: float = 1e-3
    batch_size: int = 8
    data: tuple[str, ...] = ("a", "b")


def _model_state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optim": opt.state_dict(), "step": np.int64(7), "note": Mode.slow,
            "arr": np.arange(5, dtype=np.int32), "rng": rng_state()}


def test_round_trip_is_plain_and_exact(tmp_path):
    state = _model_state()
    path = save_checkpoint(tmp_path / "c.pt", state, kind="pretrain", config=Cfg())
    # The file must be readable without unpickling arbitrary objects.
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "pretrain" and raw["config"]["data"] == ["a", "b"]
    loaded = load_checkpoint(path, kind="pretrain", config=Cfg())
    for k, v in state["model"].items():
        assert torch.equal(loaded.state["model"][k], v)
    assert loaded.state["optim"]["param_groups"] == state["optim"]["param_groups"]
    assert torch.equal(loaded.state["optim"]["state"][0]["exp_avg"], state["optim"]["state"][0]["exp_avg"])
    assert loaded.state["arr"].tolist() == [0, 1, 2, 3, 4]
    assert (loaded.state["step"], loaded.state["note"]) == (7, "slow")
    # Enum / numpy scalar values are stored as builtins (weights_only refuses foreign classes) ...
    assert type(raw["config"]["mode"]) is str and type(raw["state"]["step"]) is int
    # ... and a config holding them still compares equal to itself, and unequal to another value.
    with pytest.raises(CheckpointError, match="mode: 'fast' \\(checkpoint\\) vs 'slow'"):
        load_checkpoint(path, kind="pretrain", config=Cfg(mode=Mode.slow))


def test_refuses_objects_that_are_not_state_dicts(tmp_path):
    with pytest.raises(TypeError, match=r"state\.model.*state_dict"):
        save_checkpoint(tmp_path / "c.pt", {"model": torch.nn.Linear(2, 2)}, kind="pretrain", config=Cfg())
    assert not list(tmp_path.iterdir())


def test_crash_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_000100.pt"
    save_checkpoint(path, {"step": 100}, kind="pretrain", config=Cfg())

    def exploding_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 200}, kind="pretrain", config=Cfg())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_checkpoint(path, kind="pretrain").state["step"] == 100


def test_partial_temp_file_is_ignored_and_pruned(tmp_path):
    save_rotating(tmp_path, 100, {"step": 100}, kind="pretrain", config=Cfg())
    stale = tmp_path / ".ckpt_000200.pt.abc123.tmp"  # what a kill -9 during a write leaves behind
    stale.write_bytes(b"PK\x03\x04 truncated")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_000100.pt"
    assert load_checkpoint(tmp_path, kind="pretrain").state["step"] == 100
    save_rotating(tmp_path, 300, {"step": 300}, kind="pretrain", config=Cfg())
    assert not stale.exists()


def test_corrupted_file_raises_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt_000001.pt", _model_state(), kind="pretrain", config=Cfg())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path, kind="pretrain")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", kind="pretrain")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty", kind="pretrain")


def test_kind_version_and_config_mismatch(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1}, kind="train", config=Cfg())
    with pytest.raises(CheckpointError, match="'train' checkpoint, expected a 'pretrain'"):
        load_checkpoint(path, kind="pretrain")
    with pytest.raises(CheckpointError, match=r"lr: 0\.001 \(checkpoint\) vs 0\.01.*batch_size: 8 .* 16") as err:
        load_checkpoint(path, kind="train", config=Cfg(lr=1e-2, batch_size=16))
    assert "data" not in str(err.value)
    # Fields the caller declares irrelevant for resuming are not compared.
    load_checkpoint(path, kind="train", config=Cfg(lr=1e-2), ignore=["lr"])

    monkeypatch.setattr(ckpt, "FORMAT_VERSION", ckpt.FORMAT_VERSION + 1)
    newer = save_checkpoint(tmp_path / "new.pt", {"step": 1}, kind="train", config=Cfg())
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", ckpt.FORMAT_VERSION - 1)
    with pytest.raises(CheckpointError, match="Upgrade atcrl"):
        load_checkpoint(newer, kind="train")


def test_rotation_keeps_last_n(tmp_path):
    for step in (100, 200, 300, 1000, 20000):
        save_rotating(tmp_path, step, {"step": step}, kind="pretrain", config=Cfg(), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1000, 20000]
    assert load_checkpoint(tmp_path, kind="pretrain").state["step"] == 20000


def _draw() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), random.gauss(0, 1)


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    path = save_checkpoint(tmp_path / "r.pt", {"rng": rng_state()}, kind="pretrain", config={})
    first = _draw()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    assert _draw() != first
    set_rng_state(load_checkpoint(path, kind="pretrain").state["rng"])
    assert _draw() == first


def test_run_dir_is_never_silently_reused(tmp_path):
    out = prepare_run_dir(tmp_path / "run", resume=False)
    prepare_run_dir(out, resume=False)  # still empty: fine
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_run_dir(out, resume=False)
    assert prepare_run_dir(out, resume=True) == out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_run_dir(tmp_path / "missing", resume=True)


@pytest.mark.parametrize("arch,in_shape", [("dmc", (9, 40, 40)), ("dmlab", (3, 72, 96))])
def test_export_import_gives_identical_features(tmp_path, arch, in_shape):
    torch.manual_seed(0)
    enc = ConvEncoder(arch, in_shape)
    path = export_encoder(enc, tmp_path / "enc", objective="atc", data=["d1"], extra={"updates": 5})
    assert path.name == "encoder.safetensors" and (tmp_path / "enc" / "encoder.json").is_file()
    torch.manual_seed(1)  # a fresh encoder would get other random weights
    loaded = load_encoder(path, expect_in_shape=in_shape, expect_arch=arch)
    assert (loaded.arch, loaded.in_shape, loaded.feature_shape) == (arch, in_shape, enc.feature_shape)
    obs = torch.randint(0, 256, (4, *in_shape), dtype=torch.uint8)
    assert torch.equal(loaded(obs), enc(obs))
    info = encoder_info(tmp_path / "enc" / "encoder.json")
    assert info["objective"] == "atc" and info["data"] == ["d1"] and info["extra"] == {"updates": 5}


def test_import_refuses_mismatch_and_corruption(tmp_path):
    enc = ConvEncoder("dmc", (9, 40, 40))
    path = export_encoder(enc, tmp_path / "my.safetensors", objective="atc", data=[])
    with pytest.raises(CheckpointError, match=r"\(9, 40, 40\).*\(9, 84, 84\)"):
        load_encoder(path, expect_in_shape=(9, 84, 84))
    with pytest.raises(CheckpointError, match="'dmc' encoder.*'atari'"):
        load_encoder(path, expect_arch="atari")
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt or replaced"):
        load_encoder(path)
    path.unlink()
    with pytest.raises(CheckpointError, match="weights .* are missing"):
        load_encoder(tmp_path / "my.json")
    (tmp_path / "my.json").write_text('{"format": "atcrl-enc')
    with pytest.raises(CheckpointError, match="corrupt"):
        load_encoder(tmp_path / "my.json")
    (tmp_path / "my.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_encoder(tmp_path / "my.safetensors")
