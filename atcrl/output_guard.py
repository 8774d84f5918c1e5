"""The rule for every file a command writes where the user points it (``--out``): never into a dataset's
or a run directory's own files, never over an existing file unless ``--force``, and a target that cannot
be written is refused before any work is done.

A directory is protected when it (or a directory above it) is an atcrl dataset (``meta.json`` of the
``atcrl-episodes`` format), an atcrl run (the ``config.json`` of ``atcrl pretrain`` or ``atcrl train``; a
damaged one counts beside ``checkpoints/``, ``encoder.safetensors`` or a metrics log), or is locked by a
writer (``.atcrl.lock``).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from atcrl.runlock import LOCK_FILE

__all__ = ["OutputError", "check_outputs", "protected_owner"]

_RUN_MARKS = ("checkpoints", "encoder.safetensors", "metrics.jsonl")
"""What else a run directory holds (tells a run with a damaged config.json)."""
_RUN_KINDS = ("pretrain", "train")
"""config.json "kind" of `atcrl pretrain` and `atcrl train` runs (pretraining runs before the field: config + encoder)."""


class OutputError(ValueError):
    """An output path breaks the rule above; the message says which and what to do."""


def _is_dataset(directory: Path) -> bool:
    meta = directory / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == "atcrl-episodes"
    except (OSError, ValueError, AttributeError):
        return True  # a damaged meta is still a dataset's file


def _is_run(directory: Path) -> bool:
    info = directory / "config.json"
    if not info.is_file():
        return False
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):  # damaged: a run's only if it looks like one
        return any((directory / m).exists() for m in _RUN_MARKS)
    return isinstance(data, dict) and (data.get("kind") in _RUN_KINDS or {"config", "encoder"} <= data.keys())


def protected_owner(path: Path) -> tuple[Path, str] | None:
    """(directory, "dataset" / "run directory") that ``path`` would write into, or None."""
    for directory in Path(os.path.abspath(path)).parents:
        if _is_dataset(directory):
            return directory, "dataset"
        if _is_run(directory):
            return directory, "run directory"
        if (directory / LOCK_FILE).is_file():
            return directory, "directory being written by atcrl"
    return None


def _writable_dir(path: Path) -> Path | None:
    """The nearest existing directory above ``path`` when the process cannot create files in it."""
    directory = Path(os.path.abspath(path)).parent
    while not directory.exists():
        directory = directory.parent
    return None if os.access(directory, os.W_OK | os.X_OK) else directory


def check_outputs(paths: Iterable[Path], *, force: bool, flag: str = "--out") -> None:
    """Refuse (OutputError) to write ``paths``: inside a dataset or run, over existing files without
    ``force``, or where the directory cannot be written. Nothing is written."""
    paths = list(paths)
    for path in paths:
        if (owner := protected_owner(path)) is not None:
            directory, what = owner
            raise OutputError(f"{flag} {path} is inside the {what} {directory}; writing there would replace "
                              f"its own files. Choose an {flag} outside it")
        if path.is_dir():
            raise OutputError(f"{flag} {path} is a directory, not a file it can write")
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(shlex.quote(str(p)) for p in existing)
        raise OutputError(f"{names} already exist(s); pass --force to replace, or choose another {flag}")
    for path in paths:
        if (locked := _writable_dir(path)) is not None:
            raise OutputError(f"cannot write {path}: {locked} is not writable by this user; choose another {flag}")
