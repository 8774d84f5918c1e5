"""Run an experiment's steps as `atcrl` subprocesses, resumably, optionally several at a time.

Each step runs as ``sys.executable -m atcrl.cli <command>`` with the experiment directory as its
working directory (commands use paths relative to it), stdout and stderr appended to OUT/<id>.log.

Resuming: a step recorded done whose output is complete is skipped. Any other step runs again: an
interrupted `atcrl train` continues from its latest checkpoint (``--resume``), an interrupted
pretraining run likewise, a collection keeps its episodes (collect always runs with --append);
an output with nothing to continue from is removed first (the commands refuse to overwrite).

Stopping: Ctrl-C (or SIGTERM) is forwarded once to the running steps, which checkpoint and exit;
they stay pending and the next run continues them. Steps run in their own process groups, so a
runner killed with SIGKILL leaves them running: wait for them before re-running.

Failures: a failed step is recorded with its exit code and the tail of its log; steps that need it
are skipped; independent steps still run; the run's exit code is then 1.

--device cuda passes --device cuda to every train, pretrain and probe attempt; with --jobs N the N steps
share the one GPU. --jobs N runs up to N ready steps at once, in plan order. Every subprocess may use at most
usable cores // N intra-op threads (OMP_NUM_THREADS and MKL_NUM_THREADS, unless OMP_NUM_THREADS is
already set in the environment), and within that cap it takes only the cores that are idle when it
starts (``process.resolve_threads``): threads waiting for each other's cores ran up to 30x slower
than one thread on a shared CPU, while on idle cores two threads ran agents 1.5-1.8x faster than one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atcrl.cpus import usable_cores
from atcrl.experiments import inputs
from atcrl.experiments import record as records
from atcrl.experiments.cost import describe_seconds, wall_seconds
from atcrl.experiments.executors import Executor, Handle, LocalExecutor
from atcrl.experiments.outputs import attempt, is_complete
from atcrl.experiments.provenance import git_state, machine
from atcrl.experiments.spec import Experiment, PlanError, Step

LOG_TAIL_LINES = 20
INTERRUPT_GRACE_S = 120.0
"""How long an interrupted run waits for its steps to checkpoint and exit after forwarding Ctrl-C."""
POLL_S = 0.2
DEVICE_KINDS = ("train", "pretrain", "probe")
"""The commands that take --device (collection acts on the CPU)."""


# --------------------------------------------------------------------------- running


@dataclass
class _Running:
    step: Step
    process: Handle
    started: float
    resumed: bool


def thread_env(jobs: int = 1) -> dict[str, str]:
    """The steps' environment: each of ``jobs`` steps at once gets an equal share of the usable cores."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, usable_cores() // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    with open(out / ".experiment.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PlanError(f"another `atcrl experiment` is running in {out}; wait for it or stop it first") from None
        yield


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill RUNNER` stops the experiment like Ctrl-C: steps checkpoint and stay resumable."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plan_states(exp: Experiment, out: Path) -> dict[str, str]:
    """Step id -> "done" (will be skipped) or "todo", from OUT's record and outputs (dry runs use it too)."""
    old = records.load(out) if out.is_dir() else None
    recorded = {s["id"]: s.get("status") for s in old["steps"]} if old else {}
    return {s.id: "done" if recorded.get(s.id) == "done" and is_complete(s, out) else "todo" for s in exp.steps}


class Runner:
    """Executes one experiment in one directory; ``run`` returns the exit code."""

    def __init__(self, exp: Experiment, out: Path, *, jobs: int = 1, device: str | None = None,
                 command: list[str] | None = None, echo: Callable[[str], None] | None = None,
                 executor: Executor | None = None) -> None:
        if jobs < 1:
            raise PlanError(f"--jobs must be >= 1, got {jobs}")
        self.exp, self.out, self.jobs, self.device = exp, out, jobs, device
        self.executor: Executor = executor or LocalExecutor()
        self.echo = echo or (lambda line: print(line, flush=True))
        self.command = command or ["atcrl", "experiment", exp.name]
        self.states: dict[str, dict[str, Any]] = {}
        self.record: dict[str, Any] = {}
        self.hashes = inputs.Hashes(out)
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ record
    def _save(self) -> None:
        records.write(self.out, self.record)

    def _set(self, step: Step, **changes: Any) -> None:
        self.states[step.id].update(changes)
        self._save()

    def _say(self, what: str, step: Step, detail: str = "") -> None:
        left = sum(s["status"] in ("pending", "running") for s in self.states.values())
        elapsed = describe_duration(time.monotonic() - self.t0)
        self.echo(f"[{time.strftime('%H:%M:%S')}] {what:<7} {step.id}{detail}  ({left} left, elapsed {elapsed})")

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            with _lock(self.out), _sigterm_as_interrupt():
                return self._run()
        finally:
            self.executor.close()

    def _run(self) -> int:
        done_before = {k for k, v in plan_states(self.exp, self.out).items() if v == "done"}
        self.record = records.merge(records.load(self.out), self.exp, self.command)
        self.states = {s["id"]: s for s in self.record["steps"]}
        for sid, state in self.states.items():
            if sid not in done_before:
                state.update(status="pending", returncode=None)
                state.pop("log_tail", None)
        todo = [s for s in self.exp.steps if s.id not in done_before]
        inputs.check(self.exp, self.states, todo, self.hashes)
        self._save()
        estimate = describe_seconds(wall_seconds(todo, self.jobs)) if todo else "0 min"
        self.echo(f"experiment {self.exp.name} at scale {self.exp.scale}, seeds {list(self.exp.seeds)}, in {self.out}: "
                  f"{len(self.exp.steps)} steps, {len(done_before)} done earlier, {len(todo)} to run "
                  f"(estimated {estimate} with --jobs {self.jobs})")
        running: dict[str, _Running] = {}
        env = thread_env(self.jobs)
        try:
            while True:
                self._skip_blocked()
                for step in self._ready(len(running)):
                    running[step.id] = self._start(step, env)
                if not running:
                    break
                time.sleep(POLL_S)
                for sid in [k for k, r in running.items() if r.process.poll() is not None]:
                    self._finish(running.pop(sid))
        except KeyboardInterrupt:
            self._interrupt(running)
            self.echo(f"interrupted; run the same command again to continue (record: {self.out / records.RECORD})")
            return 130
        failed = [s for s in self.states.values() if s["status"] in ("failed", "skipped")]
        self.echo(f"experiment {self.exp.name}: {len(self.states) - len(failed)} of {len(self.states)} steps done"
                  + (f", {len(failed)} failed or skipped" if failed else "")
                  + f" in {describe_duration(time.monotonic() - self.t0)}; record: {self.out / records.RECORD}")
        return 1 if failed else 0

    def _ready(self, busy: int) -> list[Step]:
        ready = []
        for step in self.exp.steps:
            if busy + len(ready) >= self.jobs:
                break
            if self.states[step.id]["status"] == "pending" and all(
                    self.states[d]["status"] == "done" for d in step.depends):
                ready.append(step)
        return ready

    def _skip_blocked(self) -> None:
        for step in self.exp.steps:
            state = self.states[step.id]
            blocked = [d for d in step.depends if self.states[d]["status"] in ("failed", "skipped")]
            if state["status"] == "pending" and blocked:
                self._set(step, status="skipped", returncode=None, log_tail=f"not run: {', '.join(blocked)} did not finish")
                self._say("skipped", step, f" (needs {', '.join(blocked)})")

    def _start(self, step: Step, env: dict[str, str]) -> _Running:
        command, resumed = attempt(step, self.out)
        if self.device is not None and step.kind in DEVICE_KINDS:
            command += ["--device", self.device]
        self._provenance(step, command, resumed)
        with open(self.out / step.log, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} atcrl {' '.join(command)}\n".encode())
        process = self.executor.start(command, self.out.resolve(), env, self.out.resolve() / step.log,
                                      gpu=step.kind in DEVICE_KINDS)
        self._set(step, status="running", ran_command=command, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        detail = f" (resuming; est. {describe_seconds(step.estimate_s)} in all)" if resumed else \
            f" (est. {describe_seconds(step.estimate_s)})"
        self._say("start", step, detail)
        return _Running(step, process, time.monotonic(), resumed)

    def _provenance(self, step: Step, command: list[str], resumed: bool) -> None:
        """Open an attempt: the inputs' hashes, and the git state and machine it runs on. The step's own
        git state and machine are those of the first attempt that made its current output: a resumed
        attempt keeps them, a fresh start (nothing to continue) replaces them."""
        state = self.states[step.id]
        state["inputs"] = {path: self.hashes(path) for path in self.exp.inputs(step)}
        now = {**git_state(), "machine": machine()}
        state.setdefault("attempts", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
                                                 "continued": resumed, "executor": self.executor.name, **now})
        if not resumed:
            state.update(now)
        elif "git_commit" not in state:  # continues work recorded without provenance: where it began is unknown
            state.update(dict.fromkeys(now))

    def _remote_provenance(self, r: _Running) -> None:
        """A step that ran on another machine (a Ray worker) records that machine and its checkout."""
        if (where := r.process.where()) is None:
            return
        state = self.states[r.step.id]
        state["attempts"][-1].update(where)
        if not r.resumed:
            state.update(where)

    def _finish(self, r: _Running, *, interrupted: bool = False) -> None:
        code = r.process.poll()
        self._remote_provenance(r)
        seconds = time.monotonic() - r.started
        state = self.states[r.step.id]
        total = round(seconds + (state.get("wall_time_s") or 0.0), 1)  # every attempt's time
        finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        state["attempts"][-1].update(finished=finished, wall_time_s=round(seconds, 1), returncode=code)
        if code == 0 and is_complete(r.step, self.out):
            self._set(r.step, status="done", returncode=0, wall_time_s=total, finished=finished,
                      output_hash=self.hashes.made(r.step.out))
            self._say("done", r.step, f" in {describe_duration(seconds)}")
        elif interrupted:
            self._set(r.step, status="pending", returncode=code, wall_time_s=total, finished=finished,
                      log_tail="interrupted; the next run continues it")
        else:
            tail = log_tail(self.out / r.step.log)
            if code == 0:
                tail += "\n(exited 0 but its output is incomplete)"
            self._set(r.step, status="failed", returncode=code, wall_time_s=total, finished=finished, log_tail=tail)
            last = tail.strip().splitlines()[-1] if tail.strip() else ""
            self._say("FAILED", r.step, f" with exit code {code} (log {self.out / r.step.log}): {last}")

    def _interrupt(self, running: dict[str, _Running]) -> None:
        """Forward Ctrl-C so training runs checkpoint, wait for them, and leave them pending."""
        self.echo(f"stopping {len(running)} running step(s) (they checkpoint first; Ctrl-C again to kill them)")
        for r in running.values():
            with contextlib.suppress(ProcessLookupError):
                r.process.interrupt()
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        try:
            for r in running.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass
        for r in running.values():
            if r.process.poll() is None:
                r.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.process.wait(timeout=INTERRUPT_GRACE_S)
            self._finish(r, interrupted=True)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log (progress-bar carriage returns folded), for the record."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join([line for line in kept if line.strip()][-lines:])


def describe_duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
