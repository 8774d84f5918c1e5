"""A progress display with rate, ETA and a few live metrics.

A run whose first ``warmup`` units are much cheaper than the rest (SAC acts without updates until its
warm-up ends) would get an ETA extrapolated from the cheap phase, several times too short. With
``warmup`` the ETA says "after warm-up" until the expensive phase starts, and from then on is the
remaining count over that phase's own measured rate.

On a terminal it is a tqdm bar redrawn in place. When stderr is not a terminal (CI logs, files,
``nohup``) redrawing would fill the log with carriage returns, so a plain line is printed every
``interval`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self, TextIO

from tqdm import tqdm


def format_metrics(metrics: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``name=value`` for the chosen keys present in ``metrics`` (namespace prefix dropped)."""
    parts = []
    for k in keys:
        if k in metrics:
            parts.append(f"{k.rsplit('/', 1)[-1]}={float(metrics[k]):.4g}")
    return " ".join(parts)


class Progress:
    """Counts from ``initial`` to ``total``; ``update(n, metrics)`` advances and shows metrics.

    ``unit`` names what is counted ("upd" for updates, "step", "episode", "frame", ...); the rate
    is shown as ``<unit>/s``. ``warmup``: the count up to which units are cheap (see the module doc).
    """

    def __init__(
        self, total: int, *, initial: int = 0, desc: str = "", show: Sequence[str] = (),
        enabled: bool = True, interval: float = 30.0, stream: TextIO | None = None,
        tty: bool | None = None, unit: str = "upd", warmup: int = 0,
    ):
        self.total, self.count, self.desc, self.show = total, initial, desc, tuple(show)
        self.enabled, self.interval, self.unit, self.warmup = enabled, interval, unit, warmup
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._start_time, self._start_count = time.monotonic(), initial
        # Where the rate the ETA uses is measured from: the start, or the first count past the warm-up.
        self._phase_time, self._phase_count = (self._start_time, initial) if initial >= warmup else (None, 0)
        self._last_print = self._start_time
        self._metrics: dict[str, Any] = {}
        self._bar = None
        if enabled and self.tty:
            # tqdm's own ETA would extrapolate the warm-up: the remaining time is this class's (in the postfix).
            self._bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True,
                             unit=unit, smoothing=0.05,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")

    def update(self, n: int = 1, metrics: Mapping[str, Any] | None = None) -> None:
        self.count += n
        if self._phase_time is None and self.count >= self.warmup:
            self._phase_time, self._phase_count = time.monotonic(), self.count
        if metrics:
            self._metrics.update({k: metrics[k] for k in self.show if k in metrics})
        if not self.enabled:
            return
        if self._bar is not None:
            shown = format_metrics(self._metrics, self.show)
            self._bar.set_postfix_str(f"ETA {self.eta()}" + (f" {shown}" if shown else ""), refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_print >= self.interval or self.count >= self.total:
            self._last_print = now
            print(self.line(), file=self.stream, flush=True)

    @property
    def rate(self) -> float:
        """Units counted per second since this process started counting."""
        elapsed = time.monotonic() - self._start_time
        return (self.count - self._start_count) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        """The remaining time at the rate of the phase the run is in: "after warm-up" while warming up."""
        remaining = max(self.total - self.count, 0)
        if remaining == 0:
            return tqdm.format_interval(0)
        if self._phase_time is None:
            return "after warm-up"
        elapsed = time.monotonic() - self._phase_time
        done = self.count - self._phase_count
        return tqdm.format_interval(remaining * elapsed / done) if done > 0 and elapsed > 0 else "?"

    def line(self) -> str:
        """One self-contained status line: count, percent, rate, elapsed, ETA, metrics."""
        rate = self.rate
        eta = self.eta()
        elapsed = tqdm.format_interval(time.monotonic() - self._start_time)
        pct = 100.0 * self.count / self.total if self.total else 100.0
        head = f"{self.desc}: " if self.desc else ""
        text = (f"{head}{self.count}/{self.total} ({pct:.0f}%) {rate:.2f} {self.unit}/s "
                f"elapsed {elapsed} ETA {eta}")
        shown = format_metrics(self._metrics, self.show)
        return f"{text} {shown}" if shown else text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
