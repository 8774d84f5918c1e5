"""One writer per directory: an OS file lock on ``.atcrl.lock`` inside a dataset or run directory.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the holder dies in any
way (kill -9 included): a stale lock file is never a stale lock. The holder writes its PID and command
line into the file, so a second writer is refused with one line naming them. Readers never take it.

``hold_dir_lock`` keeps the lock until the process exits (the commands' run directories);
``lock_dir`` returns a ``DirLock`` released by ``release()`` or when it is garbage-collected
(a library object such as a dataset writer holds one for its own life).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sys
from pathlib import Path

__all__ = ["LOCK_FILE", "DirLock", "DirLockedError", "empty_but_lock", "hold_dir_lock", "lock_dir"]

LOCK_FILE = ".atcrl.lock"
"""Name of the lock file inside a locked directory (hidden; dataset and run readers never list it)."""


class DirLockedError(RuntimeError):
    """Another process (or another writer in this one) holds the directory's lock."""


class DirLock:
    """An acquired lock on ``directory``; ``release()`` (or garbage collection) gives it back."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # a released lock file names no holder (and takes no space)
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def _command_line() -> str:
    """This process's command line as typed (Linux: from /proc, so `python -m ...` shows in full)."""
    try:
        words = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        return shlex.join(w.decode(errors="replace") for w in words)
    except OSError:
        return shlex.join(sys.argv)


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition("\n")
    return f"PID {pid or '?'} ({command or 'command unknown'})"


def lock_dir(directory: str | Path, *, what: str = "directory", fresh: bool = False) -> DirLock:
    """Create ``directory`` if needed and take its writer lock without waiting.

    Raises DirLockedError naming the holder's PID and command when another writer has it;
    ``what`` ("dataset", "run directory") names the directory in that message. ``fresh``: the caller
    starts something new there, so once locked the directory must hold nothing else (FileExistsError
    otherwise: another writer filled it between the caller's own check and the lock).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DirLockedError(
            f"{what} {directory} is being written by {_holder(lock_path)}; wait for it to finish or stop it "
            "(only one writer at a time; reading needs no lock)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    lock = DirLock(directory, fd)
    if fresh and not empty_but_lock(directory):
        lock.release()
        raise FileExistsError(f"{what} {directory} is no longer empty (another writer started there); "
                              "choose another --out")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{_command_line()}\n".encode())
    return lock


_HELD: dict[Path, DirLock] = {}
"""Locks this process keeps until it exits, by resolved directory."""


def hold_dir_lock(directory: str | Path, *, what: str = "directory", fresh: bool = False) -> DirLock:
    """``lock_dir``, kept for the rest of the process; taking a lock this process already holds is a no-op."""
    key = Path(directory).resolve()
    held = _HELD.get(key)
    if held is not None and held.held:
        return held
    lock = lock_dir(directory, what=what, fresh=fresh)
    _HELD[key] = lock
    return lock


def empty_but_lock(directory: Path) -> bool:
    """True when ``directory`` holds nothing but (maybe) its lock file."""
    return all(p.name == LOCK_FILE for p in directory.iterdir())
