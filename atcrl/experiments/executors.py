"""Where a step's `atcrl` command runs: a local subprocess (the default) or a Ray task (ray_executor.py).

An executor starts one step's command with the experiment directory as its working directory and
its stdout and stderr appended to the step's log, and returns a handle the runner polls, interrupts
(one SIGINT, so a training run checkpoints) or kills. The runner keeps the record, the order and
the skip-if-finished rule whatever the executor.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol


class Handle(Protocol):
    """A started step."""

    returncode: int | None

    def poll(self) -> int | None:
        """The exit code once the step has ended, else None."""

    def interrupt(self) -> None:
        """Ask the step to stop as Ctrl-C does (it checkpoints and exits)."""

    def wait(self, timeout: float | None = None) -> int:
        """Block until the step ends; subprocess.TimeoutExpired after ``timeout`` seconds."""

    def kill(self) -> None:
        """End the step now."""

    def where(self) -> dict[str, Any] | None:
        """Once ended: the git state and machine the step ran on, when they differ from the runner's (a
        remote worker); None for a step that ran where the runner runs."""


class Executor(Protocol):
    name: str

    def start(self, command: list[str], cwd: Path, env: dict[str, str], log: Path, *, gpu: bool) -> Handle:
        """Start ``atcrl <command>``; ``env``: the runner's environment for its steps (runner.thread_env);
        ``gpu``: whether the step computes (train, pretrain, probe) and so may take a GPU."""

    def close(self) -> None:
        """Release what the executor holds (e.g. a Ray instance it started)."""


def atcrl_argv(command: list[str]) -> list[str]:
    return [sys.executable, "-m", "atcrl.cli", *command]


class LocalProcess:
    """A step running as a subprocess of the runner."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self._log = open(log, "ab")  # noqa: SIM115 - the step writes it until it ends
        # Own process group: a terminal's Ctrl-C reaches only the runner, which forwards exactly one
        # SIGINT (a second one would make `atcrl train` abort without its checkpoint).
        self._process = subprocess.Popen(atcrl_argv(command), cwd=cwd, env=env, stdout=self._log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        self.returncode = self._process.poll()
        if self.returncode is not None:
            self._log.close()
        return self.returncode

    def interrupt(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)

    def wait(self, timeout: float | None = None) -> int:
        self._process.wait(timeout=timeout)
        return self.poll()  # type: ignore[return-value]

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    def where(self) -> dict[str, Any] | None:
        return None


class LocalExecutor:
    """Steps as local subprocesses, inheriting the runner's environment."""

    name = "local"

    def start(self, command: list[str], cwd: Path, env: dict[str, str], log: Path, *, gpu: bool) -> Handle:
        return LocalProcess(command, cwd, env, log)

    def close(self) -> None:
        pass
