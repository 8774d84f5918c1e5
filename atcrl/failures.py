"""What the ``atcrl`` command prints for an exception no command handled: one line naming the problem
and the fix (the traceback only with ``--debug`` or ``ATCRL_DEBUG=1``), and the exit code to return.

Exit codes, the same for every command (docs/reliability.md):
0 done; 1 the work failed (damaged data, a full disk, a directory another process is writing, ...);
2 bad input or usage (the message says what to change); 3 training diverged (a loss became NaN/inf;
``atcrl train`` and ``atcrl pretrain``); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import errno
import os

__all__ = ["EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "debug_wanted",
           "exit_code", "failure_line"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

DEBUG_ENV = "ATCRL_DEBUG"
"""Set to 1 to see the traceback of a failure instead of its one-line message."""

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def debug_wanted() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _os_error(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    reason = error.strerror or _first_line(error)
    if error.errno in _DISK_FULL:
        return (f"no space left on the device writing{where}: free some space, then run the command again "
                "(--resume / --append continue; files written before, and the last complete checkpoint, are intact)")
    if error.errno in _NOT_WRITABLE:
        return f"cannot write{where} ({reason}): choose an --out you can write to, or fix its permissions"
    return f"{reason}{':' + where if where else ''}"


def exit_code(error: BaseException) -> int:
    """The exit code for an exception no command handled (a divergence has its own)."""
    return EXIT_DIVERGED if isinstance(error, FloatingPointError) else EXIT_FAILED


def failure_line(error: BaseException) -> str:
    """One line (no traceback) saying what went wrong and what to do."""
    if isinstance(error, OSError):
        return _os_error(error)
    if isinstance(error, FloatingPointError):
        return (f"diverged: {_first_line(error)}. The checkpoints on disk are from before it; lower the learning "
                "rate and start again")
    if isinstance(error, (ValueError, RuntimeError)) and str(error).strip():
        return _first_line(error)  # the project's own errors (and most library ones) say what is wrong
    return f"{type(error).__name__}: {_first_line(error)} (set {DEBUG_ENV}=1 or pass --debug for the traceback)"
