"""The files of a dataset directory: where episodes live, how they are named, how they appear atomically.

Files are only ever made visible by an atomic rename of a fully written, fsynced temp file,
so an interrupted writer leaves at worst a hidden ``*.tmp`` file that readers never look at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import IO

from atcrl.atomic import TEMP_SUFFIX
from atcrl.atomic import atomic_write as shared_atomic_write

META_FILE = "meta.json"
EPISODE_DIR = "episodes"
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
    # Datasets are shared read-only data, hence 0o644; the dataset directory must already exist,
    # and a dataset write is only reported done once the rename is durable.
    shared_atomic_write(final, write, make_parents=False, mode=0o644, strict_dir_sync=True)
