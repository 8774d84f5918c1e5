"""Encoders as ONNX models for deployment (the ``onnx`` extra): ``atcrl export --format onnx``.

The model maps input ``obs`` (uint8 ``[batch, *in_shape]``, any batch size) to output ``features``
(float32 ``[batch, feature_dim]``), the same function as ``atcrl.load_encoder``'s module; the /255
scaling is inside the graph. The model's metadata (``metadata_props``) holds the encoder's
description as json under ``atcrl``: architecture, shapes, objective, training data.

    import onnxruntime
    session = onnxruntime.InferenceSession("encoders/atc-catch.onnx")
    features = session.run(["features"], {"obs": obs_batch})[0]
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import atcrl
from atcrl.atomic import atomic_write
from atcrl.checkpoint import plain_value
from atcrl.nets.encoders import ConvEncoder
from atcrl.pretrained import PREPROCESSING, as_conv_encoder

__all__ = ["INPUT", "OUTPUT", "export_onnx", "onnx_path", "read_onnx_info"]

INPUT, OUTPUT = "obs", "features"
METADATA_KEY = "atcrl"


def onnx_path(out: str | Path) -> Path:
    """``out`` when it ends in .onnx, ``out/encoder.onnx`` for a directory (or a path without suffix)."""
    out = Path(out)
    if out.suffix == ".onnx":
        return out
    if out.is_dir() or not out.suffix:
        return out / "encoder.onnx"
    raise ValueError(f"an ONNX export goes to a directory or a path ending in .onnx, got {out}")


class _Flat(nn.Module):
    """uint8 obs -> flat features, the graph that is exported."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs).flatten(1)


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install 'atcrl[onnx]'")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def export_onnx(
    encoder: ConvEncoder | nn.Module, out_dir_or_file: str | Path, *, objective: str, data: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the encoder as an ONNX model (uint8 ``obs`` -> float32 ``features``); returns its path.

    The same arguments as ``atcrl.encoder_io.export_encoder`` (``encoder`` may also be the module of
    ``atcrl.load_encoder``); ``out_dir_or_file`` is a directory (``encoder.onnx`` in it) or a path ending
    in ``.onnx``.
    """
    _require_onnx()
    path = onnx_path(out_dir_or_file)
    encoder = as_conv_encoder(encoder)
    model = _Flat(copy.deepcopy(encoder).cpu().float()).eval()
    example = torch.zeros(2, *encoder.in_shape, dtype=torch.uint8)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    try:
        # torch.export's internal notices (deprecations, "torchvision is not installed") say nothing about this model.
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    proto = program.model_proto
    info = {
        "format": "atcrl-encoder-onnx", "arch": encoder.arch, "in_shape": list(encoder.in_shape),
        "feature_shape": list(encoder.feature_shape), "feature_dim": encoder.feature_dim,
        "input": INPUT, "output": OUTPUT, "preprocessing": PREPROCESSING, "objective": objective,
        "data": [str(d) for d in data], "atcrl_version": atcrl.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "extra": plain_value(dict(extra or {}), "extra"),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    blob = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(blob))
    return path


def read_onnx_info(path: str | Path) -> dict[str, Any]:
    """The encoder description stored in an exported ONNX model's metadata."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path} is not an atcrl encoder export (no '{METADATA_KEY}' metadata)")
