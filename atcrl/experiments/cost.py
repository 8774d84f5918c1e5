"""Run-time estimates of steps and plans, from speeds measured on the reference CPU.

The reference is the 2-core CPU this project was built on, one torch thread per process (what
`--jobs 2` gives each step there). The estimates size the cpu-small plans and are printed by
`atcrl experiment --list` and `--dry-run`; on another machine they are off by its speed ratio,
and on a GPU the full-scale numbers are far too high. They are planning aids, not measurements.

GPU estimates (``gpu_*``) come from one measurement only (GPU_MEASURED): DMC SAC runs sharing one
GPU. Every other kind of step (pretraining, probes, collection, PPO) has no GPU figure yet: its GPU
estimate is None and plans print it as "not measured", never a guess.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atcrl.experiments.spec import Step

STARTUP_S = 4.0
"""Interpreter, torch and env start-up of one `atcrl` subprocess."""

SAC_UPDATE_RATE = {  # mode: (agent steps/s at batch 256, at batch 128), one update per agent step
    "decoupled": (2.2, 4.0), "end_to_end": (2.2, 3.3), "frozen-latent": (9.0, 11.0), "frozen-pixel": (1.5, 2.5)}
"""Agent steps per second once SAC updates run, measured on cartpole-swingup with fast rendering; other
batches are extrapolated geometrically (batch 512 is cheetah's paper batch)."""
WARMUP_RATE = {False: 50.0, True: 250.0}
"""Warm-up agent steps per second (no updates) by fast_render: rendering dominates."""
EVAL_RATE = {False: 40.0, True: 120.0}
"""Deterministic evaluation agent steps per second (render + conv + actor, batch 1) by fast_render."""
COLLECT_RATE = {False: 45.0, True: 150.0}
"""Recorded agent steps per second (render, policy, compression) by fast_render."""
PRETRAIN_RATE = {"atc": 2.75, "ac": 2.75, "ats": 2.5, "inverse": 1.2, "vae": 1.4, "cpc": 0.85, "stdim": 0.8,
                 "pixel-control": 0.8, "random": 0.0}
"""UL updates per second at the objective's paper batch (commands.PAPER_BATCH), DMC conv at 84 px; measured
at batch 128 (CPC 16 sequences, ST-DIM 64) and scaled linearly in the batch. ATC at batch 128: 5-6/s."""
PROBE_RATE = 400.0
"""Frames per second the probe encodes (batch 256) and fits."""
PPO_RATE = {"end_to_end": 420.0, "decoupled": 330.0, "frozen": 500.0}
"""PPO agent steps per second with 16 Atari envs (decoupled includes its online ATC updates)."""
LAB_PPO_RATE = {"end_to_end": 68.0, "decoupled": 87.0, "frozen": 68.0}
"""PPO agent steps per second with 16 miniworld:FourRooms envs at 72x96 and the dmlab conv, measured with the
feed-forward PPO loop (decoupled: 2 ATC updates per iteration) on the 2-core host shared with other jobs; the
recurrent agent has not been measured, nor frozen runs (costed like end_to_end)."""


GPU_MEASURED = ("one NVIDIA H200, torch 2.11 + CUDA 13, MUJOCO_GL=egl, 2026-12-04: dmc:cartpole-swingup, batch 256, "
                "one SAC + one ATC update per agent step, 3 runs sharing the GPU with 4 CPU threads each, "
                "before the fast path")
GPU_RUNS = 3
"""Runs that shared the GPU in the measurement: the per-run rates hold for --jobs 3; other job counts are
scheduled with the same per-run rate (not measured)."""
GPU_SAC_RATE = {"decoupled": 33.5, "end_to_end": 33.5}
"""Agent steps/s per run once updates run: decoupled ATC-SAC measured 30-37 (the midpoint here), RAD
end-to-end "about the same". Assumption (labelled): batches up to 256 cost the same, since the measured
step is bound by Python, launches and copies rather than GPU arithmetic; other SAC modes: not measured."""
GPU_ENV_RATE = 474.0
"""Agent steps/s of dmc:cartpole-swingup with default rendering, env alone (`atcrl envs`, same machine).
Assumption (labelled): warm-up and evaluation steps run at this rate (the env bounds them, not the GPU);
with fast rendering the env is faster, so those estimates are upper bounds."""


def sac_gpu_seconds(mode: str, *, steps: int, warmup: int, batch: int, eval_every: int, eval_episodes: int,
                    episode_steps: int) -> float | None:
    """One SAC run on a GPU shared by GPU_RUNS runs, from GPU_MEASURED; None where nothing was measured."""
    if mode not in GPU_SAC_RATE or batch > 256:
        return None
    evals = 1 + (steps // eval_every if eval_every else 1)
    return (STARTUP_S + (warmup + evals * eval_episodes * episode_steps) / GPU_ENV_RATE
            + max(steps - warmup, 0) / GPU_SAC_RATE[mode])


def sac_seconds(mode: str, *, steps: int, warmup: int, batch: int, fast_render: bool, eval_every: int,
                eval_episodes: int, episode_steps: int) -> float:
    """One SAC run: warm-up, updates, and evaluations (at 0, every eval_every, and at the end)."""
    at_256, at_128 = SAC_UPDATE_RATE[mode]
    rate = at_256 * (at_128 / at_256) ** math.log2(256 / batch)
    evals = 1 + (steps // eval_every if eval_every else 1)
    eval_s = evals * eval_episodes * episode_steps / EVAL_RATE[fast_render]
    return STARTUP_S + warmup / WARMUP_RATE[fast_render] + max(steps - warmup, 0) / rate + eval_s


def ppo_seconds(mode: str, steps: int, *, eval_steps: int = 0, lab: bool = False) -> float:
    """lab: a DeepMind Lab-shaped env (LAB_PPO_RATE), else Atari (PPO_RATE)."""
    return STARTUP_S + steps / (LAB_PPO_RATE if lab else PPO_RATE)[mode] + eval_steps / 300.0


def pretrain_seconds(objective: str, updates: int, batch: int | None, paper_batch: int | None) -> float:
    rate = PRETRAIN_RATE[objective]
    if rate == 0.0:
        return STARTUP_S
    if batch is not None and paper_batch is not None:
        rate *= paper_batch / batch
    return STARTUP_S + updates / rate


def collect_seconds(agent_steps: int, fast_render: bool) -> float:
    return STARTUP_S + agent_steps / COLLECT_RATE[fast_render]


def probe_seconds(frames: int) -> float:
    return STARTUP_S + frames / PROBE_RATE


def total_seconds(steps: Sequence[Step]) -> float:
    """CPU time of the whole plan (one thread per step)."""
    return sum(s.estimate_s for s in steps)


def wall_seconds(steps: Sequence[Step], jobs: int) -> float:
    """Wall time with ``jobs`` concurrent steps, scheduled as the runner does: ready steps in plan order.
    Dependencies outside ``steps`` (done earlier) count as finished."""
    ids = {s.id for s in steps}
    finish: dict[str, float] = {d: 0.0 for s in steps for d in s.depends if d not in ids}
    running: list[tuple[float, str]] = []
    pending = list(steps)
    now = 0.0
    while pending or running:
        started = True
        while started and len(running) < jobs:
            started = False
            for s in pending:
                if all(d in finish for d in s.depends):
                    heapq.heappush(running, (now + s.estimate_s, s.id))
                    pending.remove(s)
                    started = True
                    break
        now, done = heapq.heappop(running)
        finish[done] = now
    return now


def gpu_line(steps: Sequence[Step], jobs: int = GPU_RUNS) -> str:
    """The plan's estimate on one GPU with ``jobs`` steps at once: the steps with a GPU figure, and how many
    have none."""
    known = [s for s in steps if s.gpu_estimate_s is not None]
    unknown = len(steps) - len(known)
    if not known:
        return f"not measured (no GPU figure for any of its {len(steps)} steps)"
    timed = [replace(s, estimate_s=s.gpu_estimate_s, depends=()) for s in known]
    text = (f"about {describe_seconds(wall_seconds(timed, jobs))} for the {len(known)} DMC SAC step(s) with a GPU "
            f"figure (--jobs {jobs})")
    if jobs != GPU_RUNS:
        text += f" at the per-run rate measured with {GPU_RUNS} runs sharing (with {jobs}: not measured)"
    if unknown:
        kinds = sorted({"other train" if s.kind == "train" else s.kind for s in steps if s.gpu_estimate_s is None})
        text += f"; {unknown} step(s) not measured ({', '.join(kinds)})"
    return text


def describe_seconds(seconds: float) -> str:
    """'45 min', '3.2 h' or '12 days' (estimates: two significant figures at most)."""
    if seconds < 90 * 60:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
