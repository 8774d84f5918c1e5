"""Shared by the reliability tests: the `atcrl` command in a child process, as a user runs it, and a tiny episode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from atcrl.data.dataset import DatasetMeta
from atcrl.data.episode import Episode

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def atcrl_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "atcrl.cli", *map(str, args)]


def start(args: Sequence[object], **env: str) -> subprocess.Popen:
    """`atcrl ARGS` in the background, stderr captured as text."""
    return subprocess.Popen(atcrl_command(*args), env={**CHILD_ENV, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run(args: Sequence[object], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`atcrl ARGS` to its end; returncode, stdout and stderr as text."""
    return subprocess.run(atcrl_command(*args), env={**CHILD_ENV, **env}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Poll ``condition`` until true; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the child ended early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


def kill_9_after_checkpoint(args: Sequence[object], run_dir: Path, step: int, timeout: float = 180) -> int:
    """`atcrl train ARGS --out RUN_DIR` in a child, SIGKILLed once its checkpoint of ``step`` exists; returns the
    step of the newest checkpoint it left."""
    import signal

    from atcrl.checkpoint import list_checkpoints

    proc = start([*args, "--out", run_dir])
    wait_for(lambda: (run_dir / "checkpoints" / f"ckpt_{step:06d}.pt").exists(), proc, timeout=timeout)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return list_checkpoints(run_dir / "checkpoints")[-1][0]


def one_line_error(stderr: str) -> str:
    """The single error line of a failed command (asserting there is no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def tiny_episode(seed: int = 0, steps: int = 4) -> tuple[Episode, DatasetMeta]:
    """A small random episode with physics (a few KB on disk) and the meta it fits."""
    rng = np.random.default_rng(seed)
    episode = Episode(frames=rng.integers(0, 255, (steps + 1, 1, 8, 8), dtype=np.uint8),
                      actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                      rewards=rng.normal(size=steps).astype(np.float32), terminated=False, truncated=True,
                      physics=rng.normal(size=(steps + 1, 3)), task="tiny:point")
    return episode, DatasetMeta.from_episode(episode)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``directory``: equal snapshots mean nothing was written."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def point_dataset(root: Path, episodes: int = 3, size: int = 32) -> Path:
    """``episodes`` random-action tiny:point episodes (50 steps each, with physics) recorded at ``size`` px."""
    from atcrl.envs import make_env
    from atcrl.train.collect import collect_episodes, random_policy

    space = make_env("tiny:point", image_size=size).action_space
    return collect_episodes("tiny:point", episodes, random_policy(space), out=root, image_size=size, progress=False)
