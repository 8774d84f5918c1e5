"""Steps as Ray tasks (``atcrl experiment NAME --executor ray``), for plans larger than one machine.

Each step becomes one Ray task requesting ``--cpus-per-step`` CPUs and, for the steps that compute
(train, pretrain, probe), ``--gpus-per-step`` GPUs (a fraction shares a GPU: 0.125 = 8 steps per
GPU). The task runs the step's `atcrl` command as a subprocess of the Ray worker, with the
experiment directory as its working directory and its output appended to OUT/<step>.log; the
experiment directory must therefore be on a filesystem every node sees (one machine, or a shared
mount). The plan, experiment.json and the skip-if-finished rule stay the runner's, so an
experiment can be stopped and continued with either executor.

Stopping: the runner's Ctrl-C cancels the tasks (``ray.cancel``), which forward one SIGINT to their
step (with SIGINT unblocked: Ray workers block it, and the mask is inherited): it checkpoints and exits,
and the next run continues it. A step's process dies with its worker (PR_SET_PDEATHSIG), so a task
killed by Ray leaves no orphan. Each step records the
machine and checkout of the worker it ran on.

``ray`` is an optional dependency (``pip install "atcrl[ray]"``); the local executor needs none.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atcrl.experiments.spec import PlanError

INTERRUPT_GRACE_S = 120.0
POLL_S = 0.1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _child_setup() -> Callable[[], None]:
    """What the step's process runs between fork and exec: unblock SIGINT and SIGTERM (a Ray worker blocks them,
    and a blocked mask is inherited, so the step would never see the forwarded Ctrl-C), and on Linux get SIGKILL
    when the worker dies (prctl PR_SET_PDEATHSIG). Bound here in the parent, so the forked child of a threaded
    worker imports and allocates nothing."""
    import signal

    unblock = (signal.SIGINT, signal.SIGTERM)
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, unblock)
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG

    return setup


def run_step(command: list[str], cwd: str, env: dict[str, str], log: str) -> dict[str, Any]:
    """The body of a step's Ray task: run the command, forward a cancellation as one SIGINT, and return
    the exit code with the git state and machine of this worker."""
    import signal

    from atcrl.experiments.executors import atcrl_argv
    from atcrl.experiments.provenance import git_state, machine

    with open(log, "ab") as out:
        process = subprocess.Popen(atcrl_argv(command), cwd=cwd, env={**os.environ, **env}, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_child_setup())  # noqa: PLW1509 - two C calls, bound before the fork
        try:
            # Polled, not a blocking wait: ray.cancel raises KeyboardInterrupt in this thread only while Python
            # code runs (a waitpid blocked in C never saw it).
            while (code := process.poll()) is None:
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # ray.cancel(force=False): stop as Ctrl-C does, so a training run checkpoints
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
    return {"returncode": code, **git_state(), "machine": machine()}


class RayHandle:
    """A step running as a Ray task."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref
        self._result: dict[str, Any] | None = None
        self.returncode: int | None = None

    def poll(self) -> int | None:
        import ray

        if self.returncode is None and ray.wait([self._ref], timeout=0)[0]:
            try:
                self._result = ray.get(self._ref)
                self.returncode = int(self._result["returncode"])
            except (ray.exceptions.RayError, KeyError, TypeError):  # cancelled or lost with its worker
                self.returncode = -9
        return self.returncode

    def interrupt(self) -> None:
        import ray

        if self.poll() is None:
            ray.cancel(self._ref, force=False)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("ray task", timeout or 0.0)
            time.sleep(0.1)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        import ray

        if self.poll() is None:
            ray.cancel(self._ref, force=True)

    def where(self) -> dict[str, Any] | None:
        if self._result is None:
            return None
        return {k: v for k, v in self._result.items() if k != "returncode"}


class RayExecutor:
    """Steps as Ray tasks on the cluster at ``address`` (None: a local Ray started here, "auto": the running
    cluster), each requesting ``cpus`` CPUs and, if it computes, ``gpus`` GPUs."""

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus: float = 1.0, gpus: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise PlanError('--executor ray needs Ray: pip install "atcrl[ray]" (or pip install ray)') from None
        if cpus <= 0 or gpus < 0:
            raise PlanError(f"--cpus-per-step must be > 0 and --gpus-per-step >= 0, got {cpus} and {gpus}")
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise PlanError(f"cannot start or reach Ray at --address {address or '(local)'}: {first}") from e
        self._task = ray.remote(run_step)
        self.cpus, self.gpus = cpus, gpus

    def start(self, command: list[str], cwd: Path, env: dict[str, str], log: Path, *, gpu: bool) -> RayHandle:
        # Only what the runner adds to its own environment travels: a worker keeps its node's environment
        # (CUDA_VISIBLE_DEVICES as Ray sets it, its PATH), and its thread count follows its CPU request.
        sent = {k: v for k, v in env.items() if os.environ.get(k) != v and k not in THREAD_VARIABLES}
        if not any(k in os.environ for k in THREAD_VARIABLES):
            sent.update(dict.fromkeys(THREAD_VARIABLES, str(max(1, int(self.cpus)))))
        options = {"num_cpus": self.cpus, "num_gpus": self.gpus if gpu else 0, "max_retries": 0}
        return RayHandle(self._task.options(**options).remote(command, str(cwd), sent, str(log)))

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
