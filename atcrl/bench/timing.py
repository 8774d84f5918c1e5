"""Timing for `atcrl bench` on a machine other jobs share, and running a measurement in a fresh process.

Each measurement records wall time and this process's CPU time (all threads, user + system) per
repetition. Under contention the best wall time is the figure closest to what the code does on
an idle machine (preemption only ever adds time); CPU time per item shows the work itself, which
other processes hardly change when running one thread.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def measure(fn: Callable[[], Any], *, items: float, warmup: int = 2, reps: int = 5,
            min_seconds: float = 0.0) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then at least ``reps`` times (and ``min_seconds``) timed.

    ``items`` is the work one call does (images, updates, steps); rates are items per second.
    """
    for _ in range(warmup):
        fn()
    walls, cpus, faults = [], [], []
    start = time.perf_counter()
    while len(walls) < reps or time.perf_counter() - start < min_seconds:
        r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        fn()
        t1, c1, r1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        walls.append(t1 - t0)
        cpus.append(c1 - c0)
        faults.append(r1.ru_minflt - r0.ru_minflt)
    walls.sort()
    return {
        "per_s": items / walls[0],
        "per_s_median": items / walls[len(walls) // 2],
        "per_cpu_s": items / max(min(cpus), 1e-9),
        "reps": len(walls),
        "page_faults_per_call": sum(faults) / len(faults),
        "load_average": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------- fresh processes


def in_subprocess(target: str, kwargs: dict[str, Any], *, env: dict[str, str | None] | None = None,
                  timeout: float = 3600.0) -> Any:
    """``module:function(**kwargs)`` in a fresh Python process; returns its JSON-able result.

    env: variables to set (a value) or remove (None) for the child only. Process-wide state that
    cannot be undone in place (the allocator, compiled graphs, thread pools) starts clean this way.
    """
    child_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    proc = subprocess.run([sys.executable, "-m", "atcrl.bench.timing", target, json.dumps(kwargs)],
                          env=child_env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{target} failed in a subprocess (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _child_main(argv: list[str]) -> int:
    target, kwargs = argv[0], json.loads(argv[1])
    module_name, _, fn_name = target.partition(":")
    result = getattr(importlib.import_module(module_name), fn_name)(**kwargs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
