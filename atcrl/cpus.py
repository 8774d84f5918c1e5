"""Which CPUs this process may use, and how busy other processes keep them right now (no torch here)."""

from __future__ import annotations

import os
import time

BUSY_WINDOW_S = 0.5
"""How long ``busy_cores`` watches the CPUs: long enough to average out bursts, short next to any run."""


def busy_cores(window: float = BUSY_WINDOW_S) -> float | None:
    """How many of this process's usable cores other processes keep busy now: their non-idle time over ``window`` s.

    Read from /proc/stat's per-CPU lines (steal time counts as busy: the hypervisor gave that core to
    someone else); this process sleeps meanwhile, so it measures the others. None where /proc/stat
    does not exist.
    """
    cpus = _usable_cpus()
    try:
        before = _cpu_times(cpus)
        time.sleep(window)
        after = _cpu_times(cpus)
    except OSError:
        return None
    busy = 0.0
    for (total0, idle0), (total1, idle1) in zip(before, after):
        if total1 > total0:
            busy += 1 - (idle1 - idle0) / (total1 - total0)
    return busy


def _usable_cpus() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    cpus = _usable_cpus()
    return len(cpus) if cpus is not None else (os.cpu_count() or 1)


def _cpu_times(cpus: set[int] | None) -> list[tuple[int, int]]:
    """(all ticks, idle + iowait ticks) of each CPU in ``cpus`` (None: every CPU), from /proc/stat."""
    times = []
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            if cpus is None or int(name[3:]) in cpus:
                ticks = [int(x) for x in rest[:8]]  # user nice system idle iowait irq softirq steal
                times.append((sum(ticks), ticks[3] + ticks[4]))
    return times
