"""Exported encoders: weights and a description that load without the run that trained them.

An exported encoder is two files that need nothing else to load: ``<name>.safetensors`` (the conv
weights) and ``<name>.json`` (architecture, input/feature shapes, objective, training data, a hash
of the weights file). Loading checks the hash and every shape before any weight is used.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from atcrl.atomic import atomic_write
from atcrl.checkpoint import CheckpointError, plain_value
from atcrl.jsonfile import read_json
from atcrl.nets.encoders import ConvEncoder, check_input
from atcrl.version import __version__

__all__ = ["ENCODER_FORMAT_VERSION", "encoder_info", "encoder_paths", "export_encoder", "load_encoder"]

ENCODER_FORMAT_VERSION = 1
"""Bump when the exported files change incompatibly; older code refuses newer exports."""


def encoder_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, json) for ``x.safetensors`` / ``x.json`` / a directory holding ``encoder.*``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        stem = path.with_suffix("")
    elif path.is_dir() or not path.suffix:
        stem = path / "encoder"
    else:
        raise ValueError(f"encoder path must be a directory, a .safetensors or a .json file, got {path}")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def export_encoder(
    encoder: ConvEncoder, out_dir_or_file: str | Path, *, objective: str, data: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the encoder's weights (safetensors) and a json description; returns the weights path.

    ``out_dir_or_file``: a directory (files ``encoder.safetensors`` / ``encoder.json``) or a path
    ending in ``.safetensors`` or ``.json`` naming both files.
    """
    from safetensors.torch import save as st_save

    weights_path, json_path = encoder_paths(out_dir_or_file)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    blob = st_save(tensors, metadata={"arch": encoder.arch, "format": "atcrl-encoder"})
    info = {
        "format": "atcrl-encoder",
        "format_version": ENCODER_FORMAT_VERSION,
        "arch": encoder.arch,
        "in_shape": list(encoder.in_shape),
        "feature_shape": list(encoder.feature_shape),
        "objective": objective,
        "data": [str(d) for d in data],
        "atcrl_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "weights": weights_path.name,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "extra": plain_value(dict(extra or {}), "extra"),
    }
    atomic_write(weights_path, lambda f: f.write(blob))
    atomic_write(json_path, lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
    return weights_path


def encoder_info(path: str | Path) -> dict[str, Any]:
    """The json description of an exported encoder, checked for the fields loading needs."""
    weights_path, json_path = encoder_paths(path)
    named = Path(path) if Path(path).suffix else weights_path  # the file the user named, or the weights
    if not named.exists() or not (weights_path.exists() or json_path.exists()):
        raise CheckpointError(f"encoder {named} is missing (an export is a .safetensors + .json pair, or a "
                              "directory holding encoder.safetensors + encoder.json)")
    if not json_path.is_file():
        raise CheckpointError(f"encoder description {json_path} is missing (export writes .json next to .safetensors)")
    info = read_json(json_path, CheckpointError)
    needed = {"format", "format_version", "arch", "in_shape", "feature_shape", "weights_sha256"}
    if not isinstance(info, dict) or info.get("format") != "atcrl-encoder" or not needed <= info.keys():
        raise CheckpointError(f"{json_path} is not an atcrl encoder description (needs fields {sorted(needed)})")
    if info["format_version"] > ENCODER_FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has encoder format {info['format_version']}; this atcrl reads <= {ENCODER_FORMAT_VERSION}"
        )
    return info


def load_encoder(
    path: str | Path, *, expect_in_shape: tuple[int, ...] | None = None, expect_arch: str | None = None
) -> ConvEncoder:
    """Rebuild an exported encoder from its two files, refusing mismatches and corrupt files."""
    from safetensors.torch import load as st_load

    weights_path, json_path = encoder_paths(path)
    info = encoder_info(path)
    in_shape = tuple(int(s) for s in info["in_shape"])
    if expect_arch is not None and info["arch"] != expect_arch:
        raise CheckpointError(
            f"{json_path} holds a {info['arch']!r} encoder, but a {expect_arch!r} encoder is expected here"
        )
    if expect_in_shape is not None and in_shape != tuple(expect_in_shape):
        raise CheckpointError(
            f"{json_path} was trained on observations of shape {in_shape}, but this setup produces "
            f"{tuple(expect_in_shape)} (frame stack, image size or channels differ)"
        )
    if not weights_path.is_file():
        raise CheckpointError(f"encoder weights {weights_path} are missing")
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != info["weights_sha256"]:
        raise CheckpointError(f"{weights_path} does not match the hash in {json_path.name}: corrupt or replaced")
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from e
    encoder = ConvEncoder(info["arch"], in_shape)
    if list(encoder.feature_shape) != list(info["feature_shape"]):
        raise CheckpointError(
            f"{json_path} says features are {tuple(info['feature_shape'])}, but a {info['arch']} encoder on "
            f"{in_shape} gives {encoder.feature_shape}: the architecture changed since export"
        )
    try:
        encoder.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights_path} does not fit the {info['arch']} encoder: {e}") from e
    return encoder


def load_or_make_encoder(encoder: ConvEncoder | None, path: str, arch: str, obs_shape: tuple[int, ...], *,
                         frozen: bool) -> ConvEncoder:
    """The conv an RL run starts from: ``encoder`` if given, else the one exported at ``path``, else a fresh
    ``arch`` conv (refused when ``frozen``: a frozen run needs trained weights); checked against ``obs_shape``."""
    if encoder is None and path:
        encoder = load_encoder(path, expect_in_shape=obs_shape)
    if encoder is None:
        if frozen:
            raise ValueError("frozen mode needs a pretrained encoder: set encoder_path to an exported encoder")
        encoder = ConvEncoder(arch, obs_shape)  # type: ignore[arg-type]
    check_input(encoder, obs_shape)
    return encoder
