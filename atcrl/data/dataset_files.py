"""The files of a dataset directory: where episodes live, how they are named, how they appear atomically.

Files are only ever made visible by an atomic rename of a fully written, fsynced temp file,
so an interrupted writer leaves at worst a hidden ``*.tmp`` file that readers never look at.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

META_FILE = "meta.json"
EPISODE_DIR = "episodes"
TEMP_SUFFIX = ".tmp"
_EPISODE_RE = re.compile(r"^ep_(\d+)\.npz$")


def episode_path(root: Path, index: int) -> Path:
    """Where episode number ``index`` of the dataset at ``root`` is stored."""
    return root / EPISODE_DIR / f"ep_{index:06d}.npz"


def episode_files(root: Path | str) -> list[tuple[int, Path]]:
    """(index, path) of every episode file, in index order; temp files and strangers are ignored."""
    ep_dir = Path(root) / EPISODE_DIR
    if not ep_dir.is_dir():
        return []
    found = ((_EPISODE_RE.match(p.name), p) for p in ep_dir.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def temp_files(root: Path | str) -> list[Path]:
    """Leftovers of interrupted writes (never read as data)."""
    root = Path(root)
    return sorted(p for d in (root, root / EPISODE_DIR) if d.is_dir() for p in d.glob(f".*{TEMP_SUFFIX}"))


def atomic_write(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``final`` so that it either appears complete or not at all, even on a crash."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
