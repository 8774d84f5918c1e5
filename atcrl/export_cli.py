"""``atcrl export``: write the encoder of a run's checkpoint as a standalone safetensors + json pair.

    atcrl export --run runs/atc-dmc --out encoders/atc-cartpole.safetensors
    atcrl export --run runs/atc-dmc --checkpoint 4000 --out encoders/atc-4k.safetensors
    atcrl export --run runs/dmc-atc-dmc-cartpole-swingup-0 --out encoders/agent-conv   # an `atcrl train` run

The run's ``config.json`` says which kind of run it is; each kind has one function below that
rebuilds the encoder from that kind's checkpoint state (``ENCODER_FROM_CHECKPOINT``): UL pretraining
runs, and the RL runs of ``atcrl train`` (the agent's conv).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from atcrl.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
)
from atcrl.encoder_io import encoder_paths, export_encoder
from atcrl.jsonfile import read_json
from atcrl.nets.encoders import ConvEncoder
from atcrl.onnx_export import export_onnx, onnx_path
from atcrl.output_guard import check_outputs

RUN_INFO = "config.json"
CKPT_DIR = "checkpoints"


class ExportError(ValueError):
    """The run or checkpoint cannot be exported; the message says why."""


@dataclass(frozen=True)
class ExportConfig:
    """Export the encoder of a run's checkpoint (safetensors weights + json description)."""

    run: str
    """Run directory (the --out of `atcrl pretrain` or `atcrl train`)."""
    out: str
    """Where to write: a directory (encoder.safetensors + encoder.json) or a .safetensors/.json path."""
    checkpoint: str | None = None
    """Which checkpoint: a step number (e.g. 4000) or a checkpoint file; None = the run's latest."""
    format: Literal["safetensors", "onnx"] = "safetensors"
    """safetensors + json (for atcrl.load_encoder), or onnx: one model, uint8 obs -> features, at --out if it
    ends in .onnx, else --out/encoder.onnx (needs the onnx extra)."""
    force: bool = False
    """Replace existing files at --out (files inside a dataset or a run directory are never replaced)."""


@dataclass(frozen=True)
class Exported:
    """What a kind's rebuild function hands back: the encoder and the facts the json should record."""

    encoder: ConvEncoder
    objective: str
    data: list[str]
    extra: dict[str, Any]


def _pretrain_encoder(ckpt: Checkpoint, run_info: dict[str, Any]) -> Exported:
    """The online encoder of a UL pretraining checkpoint (its UL heads and momentum copies are dropped)."""
    if not {"encoder", "in_shape"} <= run_info.keys():
        raise ExportError(f"the run's {RUN_INFO} lacks the encoder architecture or input shape")
    state = ckpt.state["objective"]
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ExportError(f"{ckpt.path} holds no encoder weights (no 'encoder.*' entries in its objective state)")
    encoder = ConvEncoder(run_info["encoder"], tuple(run_info["in_shape"]))
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{ckpt.path} does not fit a {run_info['encoder']} encoder on {run_info['in_shape']}: {e}") from e
    config = ckpt.config
    extra = {"updates": int(ckpt.state["update"]), "preset": config.get("preset"), "seed": config.get("seed"),
             "tasks": run_info.get("tasks", []), "objective_config": run_info.get("objective_config"),
             "checkpoint": str(ckpt.path)}
    return Exported(encoder, str(config.get("objective", "?")), list(config.get("data", [])), extra)


def _train_encoder(ckpt: Checkpoint, run_info: dict[str, Any]) -> Exported:
    """The conv of an `atcrl train` agent (its RL heads, target networks and any UL head are dropped)."""
    from atcrl.train.rl_checkpoint import encoder_export

    return Exported(*encoder_export(ckpt, run_info))


ENCODER_FROM_CHECKPOINT: dict[str, Callable[[Checkpoint, dict[str, Any]], Exported]] = {
    "pretrain": _pretrain_encoder,
    "train": _train_encoder,
}
"""Run kind (``config.json`` "kind", also the checkpoint's kind) -> how to rebuild its encoder."""


def read_run_info(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise ExportError(f"run directory {run} does not exist")
    path = run / RUN_INFO
    if not path.is_file():
        raise ExportError(f"{run} is not a run directory: it has no {RUN_INFO}")
    info = read_json(path, ExportError)
    info.setdefault("kind", "pretrain")  # pretraining runs written before the field existed
    if info["kind"] not in ENCODER_FROM_CHECKPOINT:
        raise ExportError(f"{run} is a {info['kind']!r} run; export knows {', '.join(ENCODER_FROM_CHECKPOINT)}")
    return info


def find_checkpoint(run: Path, which: str | None, run_info: dict[str, Any]) -> Path:
    """The checkpoint file that ``which`` names (a step, a path, or None for the latest)."""
    directory = run / CKPT_DIR
    if which is None:
        latest = latest_checkpoint(directory)
        if latest is None:
            hint = ""
            if (run / "encoder.safetensors").is_file():
                hint = f"; the run's own export is {run / 'encoder.safetensors'}"
            if run_info.get("config", {}).get("objective") == "random":
                hint += " (objective random trains nothing, so it has no checkpoints)"
            raise ExportError(f"{run} has no checkpoint in {directory}{hint}")
        return latest
    path = checkpoint_path(directory, int(which)) if which.isdigit() else Path(which)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    return path


def run_export(cfg: ExportConfig) -> int:
    """``atcrl export``: 0 on success, 2 on bad input (the message says what)."""
    run = Path(cfg.run)
    try:
        check_outputs([onnx_path(cfg.out)] if cfg.format == "onnx" else encoder_paths(cfg.out), force=cfg.force)
        info = read_run_info(run)
        path = find_checkpoint(run, cfg.checkpoint, info)
        ckpt = load_checkpoint(path, kind=info["kind"])
        exported = ENCODER_FROM_CHECKPOINT[info["kind"]](ckpt, info)
        write = export_onnx if cfg.format == "onnx" else export_encoder
        weights = write(exported.encoder, cfg.out, objective=exported.objective, data=exported.data,
                        extra=exported.extra)
    except (ExportError, CheckpointError, ValueError, ImportError) as e:
        print(f"atcrl export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported the encoder of {path} ({exported.extra.get('updates', '?')} updates) to {weights}",
          file=sys.stderr)
    return 0
