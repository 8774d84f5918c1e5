"""What every sync-free training step shares: device-side metric sums, and running a step eagerly or as CUDA graphs.

A sync-free step (the SAC update, the offline UL update, PPO's minibatch update) is a function that launches
device work and adds its metrics into a ``DeviceMeter`` without reading anything back. ``Captured`` runs such
a function once per call:

    eagerly                      where the device is not captured (the CPU, or FastPathConfig.cuda_graph off)
    eagerly on a side stream     for its first ``WARMUP_UPDATES`` calls on CUDA (optimizer states and library
                                 handles must exist before capture)
    captured, then replayed      once per key (one graph per shape of the step, e.g. a phase of SAC's
                                 actor/target cadence); capture records without running, so the captured
                                 call is replayed at once

Graphs point at the tensors they were captured with: after a restored checkpoint replaced optimizer states,
the step (and its runner) is made anew, so it captures afresh. Inputs that change between calls (a minibatch, a learning rate) must be
copied into tensors the graph reads, outside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

import torch

__all__ = ["WARMUP_UPDATES", "Captured", "DeviceMeter", "raise_if_nonfinite"]

WARMUP_UPDATES = 4
"""Eager updates on a side stream before a CUDA graph is captured (torch's capture needs a few)."""


class DeviceMeter:
    """Running sums of named 0-d metrics on the device, read (one sync) once per interval.

    Device metrics are added into fixed slots of one float64 tensor allocated up front, so the adds can
    sit inside a captured graph; how many times each was added is counted on the host (``count``), since
    a replayed graph runs no Python. Host-side numbers (e.g. the UL learning rate) are summed apart.
    """

    SLOTS = 64

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(self.SLOTS, dtype=torch.float64, device=device)
        self.slot: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.host: dict[str, float] = {}

    def add(self, stats: dict[str, torch.Tensor | float]) -> list[str]:
        """Add metrics (no sync): 0-d tensors into their device slots, numbers into the host sums. Returns the
        names of the device ones, for ``count`` (the host ones are counted here)."""
        names = []
        for name, value in stats.items():
            if not torch.is_tensor(value):
                self.add_host(name, float(value))
                continue
            if name not in self.slot:
                if len(self.slot) == self.SLOTS:
                    raise ValueError(f"more than {self.SLOTS} metrics: raise DeviceMeter.SLOTS")
                self.slot[name] = len(self.slot)
            self.sums[self.slot[name]] += value.detach().reshape(())
            names.append(name)
        return names

    def count(self, names: list[str]) -> None:
        for name in names:
            self.counts[name] = self.counts.get(name, 0) + 1

    def add_host(self, name: str, value: float) -> None:
        self.host[name] = self.host.get(name, 0.0) + value
        self.count([name])

    def _totals(self) -> dict[str, float]:
        """Every metric's sum since the last read, device and host ones (one sync)."""
        sums = dict(zip(self.slot, self.sums[: len(self.slot)].tolist()))
        sums.update(self.host)
        return {name: sums[name] for name, n in self.counts.items() if n}

    def read(self) -> dict[str, float]:
        """Interval means of every metric added since the last read; FloatingPointError if one is NaN/inf."""
        means = {name: total / self.counts[name] for name, total in self._totals().items()}
        self.sums.zero_()
        self.counts.clear()
        self.host.clear()
        raise_if_nonfinite(means)
        return means

    def check_finite(self) -> None:
        """FloatingPointError if a metric summed so far is NaN/inf (one sync; the sums are kept)."""
        raise_if_nonfinite(self._totals())


def raise_if_nonfinite(values: dict[str, float]) -> None:
    """FloatingPointError naming every NaN/inf value, before it can reach a checkpoint."""
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        raise FloatingPointError(
            f"{', '.join(bad)} became NaN/inf: stopping before it corrupts a checkpoint "
            "(check the learning rates, the reward scale and the replay for NaN/inf)")


class Captured:
    """Runs a sync-free step body eagerly, or (``capture``) as one CUDA graph per key after a warm-up.

    The body adds its metrics into ``meter`` and returns the names of the device ones it added; each call
    counts them once (a replayed graph adds the same ones).
    """

    def __init__(self, device: torch.device, capture: bool, meter: DeviceMeter | None = None):
        self.device = torch.device(device)
        self.capture = capture
        self.meter = DeviceMeter(self.device) if meter is None else meter
        self.names: dict[Hashable, list[str]] = {}  # device metrics each key's body adds (its graph replays them)
        self.graphs: dict[Hashable, torch.cuda.CUDAGraph] = {}
        self._pool: Any = None
        self._warm = 0

    def __call__(self, key: Hashable, body: Callable[[], list[str]]) -> None:
        if not self.capture:
            self.names[key] = body()
        elif key in self.graphs:
            self.graphs[key].replay()
        elif self._warm < WARMUP_UPDATES:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.names[key] = body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._warm += 1
        else:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self.names[key] = body()
            self._pool = graph.pool()  # every key's graph shares one memory pool; they replay in turn
            self.graphs[key] = graph
            graph.replay()  # capturing recorded this call without running it
        self.meter.count(self.names[key])

    def read(self) -> dict[str, float]:
        """Interval means of the step's metrics (one sync); FloatingPointError if one is NaN/inf."""
        return self.meter.read()
