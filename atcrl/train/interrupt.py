"""Ctrl-C in a long command: the first one asks it to stop at its next safe point with a checkpoint, a
second one aborts at once (KeyboardInterrupt), as users of `atcrl train` and `atcrl pretrain` expect.

``atcrl experiment`` relies on this: it forwards one Ctrl-C (or its own SIGTERM) to the steps it runs, which
checkpoint and exit, and the next run of the experiment continues them.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import TracebackType
from typing import Any, Self


class StopOnCtrlC:
    """Context manager: while active, the first SIGINT sets ``requested`` (and prints ``message``) instead of
    raising; the handler is installed only on the main thread (signals are delivered there), so elsewhere
    Ctrl-C keeps its default effect. The previous handler is restored on exit."""

    def __init__(self, message: str, *, enabled: bool = True) -> None:
        self.message = message
        self.enabled = enabled
        self.requested = False
        """Set by the first Ctrl-C: stop at the next safe point, with a checkpoint."""
        self._previous: Any = None

    def __enter__(self) -> Self:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"\nCtrl-C: {self.message} (Ctrl-C again to abort without one)", file=sys.stderr)
