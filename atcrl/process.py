"""The process-wide part of the fast path: intra-op CPU threads and glibc's allocator, set once at start-up.

``configure_process(cfg.fast)`` applies a ``FastPathConfig``'s ``threads`` and ``tune_allocator`` fields
(see docs/performance.md); the per-module part (precision, layout, optimizers) is in ``atcrl.fastpath``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Any

import torch

from atcrl import cpus
from atcrl.fastpath import FastPathConfig

NO_MALLOC_TUNING_ENV = "ATCRL_NO_MALLOC_TUNING"
"""Set to 1 to keep glibc's default allocator behaviour even when the config asks for tuning."""

# glibc mallopt parameters (malloc.h). Set at run time they act like the MALLOC_*_ environment variables
# read at process start (measured the same: docs/performance.md), so no re-exec is needed.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
TRIM_THRESHOLD = 1 << 30
"""Free memory kept at the top of the heap before it is returned to the kernel (1 GiB)."""
TOP_PAD = 256 << 20
"""Extra bytes requested whenever the heap grows, so growth happens in few, large steps (256 MiB)."""
MALLOC_ENV: dict[str, str] = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    "MALLOC_TOP_PAD_": str(TOP_PAD),
}
"""The same tuning as environment variables, read by glibc at process start (e.g. for a wrapper script).
MMAP_MAX_=0 rather than a large MMAP_THRESHOLD_: glibc caps the threshold at 32 MiB when set through
mallopt, so allocations above it would still be fresh mmaps; with no mmaps at all both routes agree."""


def resolve_threads(threads: int = 0) -> int:
    """``threads`` if given; else the cores other processes leave idle, at most torch's current count.

    Idle cores = usable cores (split evenly between torchrun's local ranks) minus the cores other processes
    keep busy right now (``cpus.busy_cores``, rounded; the 1-minute load average where /proc/stat is missing).
    Not the load average alone: it trails the machine by a minute or more, so a run started just after
    another one ended would take one thread on idle cores (agents ran 1.5-1.8x slower, docs/performance.md).
    Capping at the current count keeps a lower OMP_NUM_THREADS (or a caller's torch.set_num_threads) in
    force, and at a cap of 1 nothing is measured. Threads that must wait for a core another process holds
    stall every parallel region: two threads ran up to 30x slower than one on this 2-core box under load.
    Call it at start-up, before this process starts working.
    """
    if threads > 0:
        return threads
    usable = cpus.usable_cores()
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cap = min(torch.get_num_threads(), usable // ranks)
    if cap <= 1:
        return 1
    busy = cpus.busy_cores()
    idle = usable - round(os.getloadavg()[0] if busy is None else busy)
    return max(1, min(cap, idle // ranks))


def tune_allocator() -> bool:
    """Make glibc serve every allocation from its heap and keep freed memory there; True if applied.

    By default glibc hands large freed blocks back to the kernel (mmapped chunks, and the heap top beyond
    its trim threshold), so every update's activations land on fresh pages the kernel zero-fills on first
    touch: 125k-360k page faults per batch-512 DMC step, over a third of its time. After this, steady-state
    training faults no pages. The cost is that the process keeps its peak heap resident. A no-op on
    non-glibc systems and when ATCRL_NO_MALLOC_TUNING=1.
    """
    if os.environ.get(NO_MALLOC_TUNING_ENV, "") not in ("", "0"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(ok and libc.mallopt(_M_TOP_PAD, TOP_PAD))


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_env_active() -> bool:
    """Whether this process was started with the MALLOC_*_ tuning variables already set."""
    return all(name in os.environ for name in MALLOC_ENV)


def configure_process(cfg: FastPathConfig) -> dict[str, Any]:
    """Apply the process-wide settings (threads, allocator) once at start-up; returns what was applied.

    The allocator tuning cannot be undone within a process: a later fp32_eager config only stops
    asking for it, so compare allocators in separate processes (as ``atcrl bench`` does).
    """
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    tuned = tune_allocator() if cfg.tune_allocator else False
    return {"threads": threads, "allocator_tuned": tuned or malloc_env_active()}
