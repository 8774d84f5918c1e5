"""Versioned, atomic, state-dict-only checkpoints; RNG capture; run directories.

A checkpoint is a ``torch.save`` of plain data only (nested dicts/lists of tensors, numbers and
strings) and is always read back with ``torch.load(weights_only=True)``, so opening one never runs
code from the file. Writes go to a temporary file in the same directory and are renamed into place,
so a crash mid-write leaves the previous checkpoint intact and the temporary file is ignored.

Encoder export/import lives in ``atcrl.encoder_io``.
"""

from __future__ import annotations

import dataclasses
import random
import re
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcrl.atomic import atomic_write
from atcrl.version import __version__

__all__ = [
    "CKPT_PATTERN",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_path",
    "config_differences",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "plain_config",
    "plain_value",
    "prepare_run_dir",
    "prune_checkpoints",
    "resolve_checkpoint",
    "rng_state",
    "save_checkpoint",
    "save_rotating",
    "set_rng_state",
]

FORMAT_VERSION = 1
"""Bump when the checkpoint layout changes incompatibly; older code refuses newer files."""
CKPT_PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint or exported encoder cannot be used: missing, corrupt, or made for something else."""


# --------------------------------------------------------------------------- plain data


def plain_config(config: Any) -> dict[str, Any]:
    """A dataclass or mapping as JSON-compatible nested dicts/lists (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dataclass instance or a mapping, got {type(config).__name__}")
    return plain_value(dict(config), "config")


def _primitive(value: Any) -> tuple[bool, Any]:
    """(True, exact builtin) for scalars; enums and numpy scalars become their plain values.

    Subclasses of builtins (a str-Enum, np.float64) would be pickled by class name, which
    ``weights_only`` loading refuses, so they are reduced to the builtin type here.
    """
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return True, None
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return True, kind(value)
    return False, value


def plain_value(value: Any, where: str) -> Any:
    """``value`` as JSON-compatible data; ``where`` names it in the error for anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_config(value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    ok, scalar = _primitive(value)
    if ok:
        return scalar
    raise TypeError(f"{where}: {type(value).__name__} is not plain data (str/number/bool/None/list/dict)")


def _storable(value: Any, where: str) -> Any:
    """Check that a state tree is plain data; numpy arrays become tensors (weights_only can't load them)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, Mapping):
        return {_primitive(k)[1]: _storable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_storable(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    ok, scalar = _primitive(value)
    if ok:
        return scalar
    raise TypeError(
        f"{where}: cannot checkpoint a {type(value).__name__}; checkpoints hold state dicts only "
        "(tensors, numbers, strings, lists, dicts) — call .state_dict() on modules and optimizers"
    )


# --------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What ``load_checkpoint`` returns."""

    state: dict[str, Any]
    """The state tree as saved (numpy arrays come back as tensors)."""
    kind: str
    config: dict[str, Any]
    format_version: int
    atcrl_version: str
    created: float
    path: Path


def save_checkpoint(path: str | Path, state: dict[str, Any], *, kind: str, config: Any) -> Path:
    """Atomically write ``state`` (plain data / state dicts only) with its kind, config and versions."""
    payload = {
        "format_version": FORMAT_VERSION,
        "atcrl_version": __version__,
        "kind": kind,
        "config": plain_config(config),
        "created": time.time(),
        "state": _storable(state, "state"),
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def _read_payload(path: Path, map_location: str | torch.device) -> Any:
    """The unpickled payload of one checkpoint file, every member's CRC-32 checked first (torch does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            # torch's reader returns no bytes (uninitialised memory) for a member marked as a directory.
            marked = [m.filename for m in archive.infolist() if m.is_dir() or m.external_attr & 0x10]
        if bad is not None or marked:
            raise zipfile.BadZipFile(f"member {bad or marked[0]} is damaged (CRC-32 or attributes)")
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zipfile and torch raise several types for truncated or foreign files
        raise _Unreadable(
            f"{path} is not a readable atcrl checkpoint (truncated, corrupt, or not plain state dicts): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


class _Unreadable(CheckpointError):
    """The file itself is damaged (as opposed to a readable checkpoint made for something else)."""


def load_checkpoint(
    path: str | Path, *, kind: str, config: Any = None, ignore: Iterable[str] = (),
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint (or the latest one in a directory) and check it is one we can resume.

    Refuses, with a message naming the problem: a missing or corrupt file, a checkpoint of another
    ``kind``, a newer format version, and — when ``config`` is given — a saved config that differs
    from it in any top-level field not listed in ``ignore``. Given a directory whose newest checkpoint
    is damaged, it falls back to the newest readable one, with a warning on stderr naming both.
    """
    path = Path(path)
    candidates = [p for _, p in reversed(list_checkpoints(path))] if path.is_dir() else [resolve_checkpoint(path)]
    if not candidates:
        raise CheckpointError(f"no checkpoint (ckpt_*.pt) in {path}")
    damaged: list[str] = []
    for candidate in candidates:
        try:
            payload = _read_payload(candidate, map_location)
        except _Unreadable as e:
            if len(candidates) == 1:
                raise
            damaged.append(str(e))
            continue
        if damaged:
            print(f"warning: {candidates[0]} is damaged; using {candidate}, the newest readable checkpoint "
                  f"({len(damaged)} unreadable: {damaged[0]})", file=sys.stderr)
        path = candidate
        break
    else:
        raise CheckpointError(f"no readable checkpoint in {path}: {'; '.join(damaged)}")
    if not isinstance(payload, dict) or not {"format_version", "kind", "state", "config"} <= payload.keys():
        raise CheckpointError(f"{path} is a torch file but not an atcrl checkpoint (missing header fields)")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format_version']} (written by atcrl "
            f"{payload.get('atcrl_version', '?')}); this atcrl ({__version__}) reads format "
            f"<= {FORMAT_VERSION}. Upgrade atcrl to resume it."
        )
    if payload["kind"] != kind:
        raise CheckpointError(f"{path} is a {payload['kind']!r} checkpoint, expected a {kind!r} checkpoint")
    if config is not None:
        diffs = config_differences(payload["config"], plain_config(config), ignore=ignore)
        if diffs:
            raise CheckpointError(
                f"{path} was written with a different config; differing fields: {'; '.join(diffs)}. "
                "Resume with the original settings, or start a new run in another output directory."
            )
    return Checkpoint(
        state=payload["state"], kind=payload["kind"], config=payload["config"],
        format_version=payload["format_version"], atcrl_version=payload.get("atcrl_version", "?"),
        created=payload.get("created", 0.0), path=path,
    )


def config_differences(saved: dict[str, Any], current: dict[str, Any], *, ignore: Iterable[str] = ()) -> list[str]:
    """Human-readable ``field: saved -> current`` for every top-level field that differs; ``ignore`` names
    fields to skip, top-level ("fast") or nested ("sac.q_lr")."""
    skip = set(ignore)
    for path in (p for p in skip if "." in p):
        saved, current = _without(saved, path.split(".")), _without(current, path.split("."))
    keys = [k for k in dict.fromkeys([*saved, *current]) if k not in skip]
    diffs = []
    for k in keys:
        if (k in saved) != (k in current) or saved.get(k) != current.get(k):
            a = repr(saved[k]) if k in saved else "<absent>"
            b = repr(current[k]) if k in current else "<absent>"
            diffs.append(f"{k}: {a} (checkpoint) vs {b} (now)")
    return diffs


def _without(tree: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """A copy of ``tree`` without the nested key at ``path`` (unchanged when it is not there)."""
    head, rest = path[0], path[1:]
    if head not in tree or (rest and not isinstance(tree[head], dict)):
        return tree
    if not rest:
        return {k: v for k, v in tree.items() if k != head}
    return {**tree, head: _without(tree[head], rest)}


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``directory/ckpt_000100.pt`` for step 100 (zero-padded so names sort by step)."""
    return Path(directory) / f"ckpt_{step:06d}.pt"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``directory``, oldest first; temp files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the latest ``ckpt_*.pt`` when ``path`` is a directory."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint (ckpt_*.pt) in {path}")
        return latest
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def save_rotating(
    directory: str | Path, step: int, state: dict[str, Any], *, kind: str, config: Any, keep: int = 3
) -> Path:
    """Save ``ckpt_<step>.pt`` in ``directory`` and delete all but the newest ``keep`` checkpoints."""
    path = save_checkpoint(checkpoint_path(directory, step), state, kind=kind, config=config)
    prune_checkpoints(directory, keep)
    return path


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; also remove temp files left by interrupted writes."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    for _, p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)
    # Called right after our own write finished, so any temp file still here is from a crash.
    for p in Path(directory).glob(".ckpt_*.tmp"):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Python ``random``, numpy's global RNG and torch (CPU, and every CUDA device if present)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
            "has_gauss": int(np_has_gauss), "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state()`` captured (CUDA only when both sides have it)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = np.asarray(n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else n["keys"], dtype=np.uint32)
    np.random.set_state((n["name"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["gauss"])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --------------------------------------------------------------------------- run directories


def prepare_run_dir(out: str | Path, *, resume: bool, create: bool = True) -> Path:
    """Create (or, with ``resume``, reopen) a run directory; never silently reuse a non-empty one.

    ``create=False`` only checks (for DDP ranks other than the one that writes).
    """
    out = Path(out)
    if resume:
        if not out.is_dir():
            raise FileNotFoundError(f"cannot resume: run directory {out} does not exist")
        return out
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(
            f"run directory {out} already exists and is not empty; pass --resume to continue that run, "
            "or choose another --out"
        )
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out
