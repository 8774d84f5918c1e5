"""Atomic file writes: a file appears complete under its final name, or not at all.

The bytes go to a hidden temp file in the destination directory, are fsynced, and the temp file
is renamed over the destination. A crash mid-write leaves the previous file intact plus, at worst,
a ``.<name>.*.tmp`` file that readers never open and cleanup code can recognise by its suffix.
A failed write is raised as an OSError naming the file; one that leaves the disk (nearly) full is
raised as ENOSPC, whatever the writer raised.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["TEMP_SUFFIX", "atomic_write"]

TEMP_SUFFIX = ".tmp"
"""Suffix of in-progress writes (names are ``.<final name>.<random>.tmp``)."""


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], None], *, make_parents: bool = True,
    mode: int | None = None, strict_dir_sync: bool = False,
) -> Path:
    """Call ``write(file)`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    ``make_parents``: create missing parent directories first (otherwise a missing directory is an error).
    ``mode``: permission bits for the file; ``None`` keeps the temp file's owner-only ``0o600``.
    ``strict_dir_sync``: raise if the directory cannot be fsynced after the rename; by default that
    step is best effort, since the rename is atomic either way and only its durability is at stake.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(path.parent)  # measured before the partial temp file is deleted
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # write() names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        if full and isinstance(e, Exception) and not isinstance(e, OSError):
            # torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    _fsync_dir(path.parent, strict=strict_dir_sync)
    return path


DISK_FULL_BYTES = 1 << 20
"""A failed write with less free space than this left on its file system is reported as a full disk."""


def _disk_full(directory: Path) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < DISK_FULL_BYTES


def _fsync_dir(directory: Path, *, strict: bool) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened or fsynced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)
