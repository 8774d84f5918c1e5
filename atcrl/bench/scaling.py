"""Scaling curves for `atcrl bench --only scaling`: how throughput grows with batch size, envs and processes.

Four parts, each fast-path figure next to ``FastPathConfig.fp32_eager()`` where the fast path applies:

* encoder training images/s vs batch size, DMC (9x84x84) and Atari (4x84x84) encoders
  (``compute.encoder_training``, the encoder section's measurement);
* ATC pretraining updates/s and images/s vs batch size, DMC preset (``ul.atc_throughput``);
* Atari vector-env steps/s vs number of envs (ALE's threaded vector env via ``make_vec_env``),
  and one fast-rendering DMC env as a reference;
* offline ATC pretraining (``atcrl.train.pretrain`` under torchrun, gloo) on 1 vs N processes at the
  same global batch, on a dataset recorded with ``atcrl collect`` (random policy) in a temp dir.

An ATC "image" is one observation through an encoder: each update encodes B anchors (online
encoder, with backward) and B positives (momentum target), so images/s = 2 B updates/s.
Derived figures (ratios, roofline fractions) are added by ``report.derive``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcrl.bench.compute import ENCODER_INPUTS, encoder_flops_per_image, matmul_gflops
from atcrl.bench.timing import measure
from atcrl.fastpath import FastPathConfig

Runner = Callable[..., Any]
"""``run(target, proc_env=None, **kwargs)``: calls ``module:function(**kwargs)``, in a fresh process or not."""

PARTS = ("encoder", "atc", "envs", "ddp")
ATARI_SPEC = "atari:Pong"
DMC_SPEC = "dmc:cartpole-swingup"
DDP_DATA_SPEC = "tiny:point"
"""Env recorded for the DDP dataset: 9x84x84 stacked RGB like DMC, and numpy-rendered, so recording takes
seconds; pretraining speed does not depend on what the pixels show."""


@dataclass(frozen=True)
class ScalingPlan:
    """What one scaling run measures (built by ``atcrl.bench.cli`` from BenchConfig; tiny under --quick)."""

    batch_sizes: tuple[int, ...]
    """Batch sizes of the encoder-training and ATC curves."""
    num_envs: tuple[int, ...]
    """Atari vector-env sizes."""
    ddp_processes: tuple[int, ...]
    """torchrun process counts for offline pretraining; the first is the reference of the ratios."""
    ddp_batch_size: int
    """Global ATC batch of every DDP run (split evenly over the processes)."""
    ddp_updates: int
    """Updates per DDP run (the first log window, a warm-up, is left out of the rate)."""
    reps: int
    warmup: int
    seconds: float
    matmul_n: int
    atc_transitions: int = 5000
    """Transitions in the synthetic replay of the ATC curve."""
    env_block: int = 20
    """Env steps per timed call (one step is too short to time on its own)."""
    ddp_episodes: int = 20
    """Episodes recorded for the DDP dataset."""
    ddp_image_size: int = 84
    ddp_max_steps: int | None = None
    """Cut recorded episodes at this many steps (None: the env's own length)."""
    ddp_variants: tuple[str, ...] = ("fp32 eager", "fast path")


def variants(threads: int) -> dict[str, FastPathConfig]:
    """The two paths every figure compares, both on ``threads`` intra-op threads."""
    return {"fp32 eager": FastPathConfig.fp32_eager(threads), "fast path": FastPathConfig(threads=threads)}


def run_scaling(plan: ScalingPlan, run: Runner, device: str, threads: int,
                proc_env: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Every part of the scaling section; a part that fails is recorded under "errors" and the rest still run."""
    out: dict[str, Any] = {"threads": threads, "batch_sizes": list(plan.batch_sizes), "num_envs": list(plan.num_envs),
                           "ddp_processes": list(plan.ddp_processes), "errors": {}}
    out["roofline"] = run("atcrl.bench.scaling:roofline", threads=threads, n=plan.matmul_n,
                          reps=max(3, 2 * plan.reps), device=device)
    out["flops_per_image"] = {a: encoder_flops_per_image(a) for a in ENCODER_INPUTS}
    parts: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "encoder": lambda: _encoder_rows(plan, run, device, threads, proc_env),
        "atc": lambda: _atc_rows(plan, run, device, threads, proc_env),
        "envs": lambda: _env_rows(plan, run),
        "ddp": lambda: _ddp_rows(plan, device, threads, proc_env),
    }
    for name, part in parts.items():
        start = time.perf_counter()
        try:
            out[name] = part()
        except Exception as e:  # noqa: BLE001 -- a failed part must not lose the others' figures
            out[name] = []
            out["errors"][name] = f"{type(e).__name__}: {e}"[:2000]
        out.setdefault("part_seconds", {})[name] = time.perf_counter() - start
    return out


def roofline(threads: int, n: int, reps: int, device: str = "cpu") -> dict[str, Any]:
    """fp32 and bf16 matmul GFLOP/s on ``threads`` threads (the section's own roofline, measured first)."""
    torch.set_num_threads(threads)
    return {"threads": threads, **{p: matmul_gflops(p, n, reps=reps, device=device) for p in ("fp32", "bf16")}}


# --------------------------------------------------------------------------- compute curves


def _encoder_rows(plan: ScalingPlan, run: Runner, device: str, threads: int,
                  proc_env: dict[str, str | None] | None) -> list[dict[str, Any]]:
    rows = []
    for name, fast in variants(threads).items():
        for arch in ENCODER_INPUTS:
            # One process per (variant, arch), batch sizes in increasing order, as the encoder section does.
            result = run("atcrl.bench.compute:encoder_training", proc_env=proc_env, arch=arch,
                         batch_sizes=sorted(plan.batch_sizes), fast=dataclasses.asdict(fast), device=device,
                         reps=plan.reps, warmup=plan.warmup, min_seconds=plan.seconds)
            rows += [{"variant": name, "arch": arch, "batch": int(b), "fastpath": result["fastpath"], **t}
                     for b, t in result["results"].items()]
    return rows


def _atc_rows(plan: ScalingPlan, run: Runner, device: str, threads: int,
              proc_env: dict[str, str | None] | None) -> list[dict[str, Any]]:
    rows = []
    for name, fast in variants(threads).items():
        for batch in sorted(plan.batch_sizes):
            r = run("atcrl.bench.ul:atc_throughput", proc_env=proc_env, preset="dmc", fast=dataclasses.asdict(fast),
                    device=device, transitions=plan.atc_transitions, batch_size=batch, reps=plan.reps,
                    warmup=plan.warmup, min_seconds=plan.seconds)
            rows.append({"variant": name, "preset": "dmc", "batch": batch, "updates_per_s": r["timing"]["per_s"],
                         "images_per_s": 2 * batch * r["timing"]["per_s"], "sample_ms": r["sample_ms"],
                         "flops_per_update": r["flops_per_update"], "fastpath": r["fastpath"], **r["timing"]})
    return rows


# --------------------------------------------------------------------------- environments


def env_steps_per_s(spec: str, num_envs: int = 1, vector: bool = True, fast_render: bool = False,
                    block: int = 20, reps: int = 5, warmup: int = 1, min_seconds: float = 0.0) -> dict[str, Any]:
    """Random-action steps/s of ``spec``: a ``make_vec_env`` of ``num_envs`` envs, or one ``make_env`` env.

    agent_steps_per_s counts observations returned (summed over envs); env_steps_per_s multiplies by
    the action repeat (emulator frames / physics-control steps). A single env is reset inside the timed
    block when its episode ends; vector envs reset themselves.
    """
    from atcrl.envs import env_meta, make_env, make_vec_env, parse_spec

    torch.set_num_threads(1)
    env_threads = 1
    if vector:
        if parse_spec(spec)[0] == "atari":  # ALE's C++ vector env: make_vec_env's default, one thread per core
            env_threads = min(num_envs, os.cpu_count() or 1)
        env = make_vec_env(spec, num_envs, seed=0, fast_render=fast_render, num_threads=env_threads)
    elif num_envs != 1:
        raise ValueError(f"a single (non-vector) env has num_envs 1, got {num_envs}")
    else:
        env = make_env(spec, seed=0, fast_render=fast_render)
    try:
        env.action_space.seed(0)
        env.reset()
        meta = env_meta(env)

        def steps() -> None:
            for _ in range(block):
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if not vector and (terminated or truncated):
                    env.reset()

        timing = measure(steps, items=block * num_envs, warmup=warmup, reps=reps, min_seconds=min_seconds)
    finally:
        env.close()
    return {"spec": spec, "num_envs": num_envs, "vector": vector, "fast_render": fast_render,
            "action_repeat": meta.action_repeat, "env_threads": env_threads, "agent_steps_per_s": timing["per_s"],
            "env_steps_per_s": timing["per_s"] * meta.action_repeat, **timing}


def _env_rows(plan: ScalingPlan, run: Runner) -> list[dict[str, Any]]:
    common = {"block": plan.env_block, "reps": plan.reps, "warmup": 1, "min_seconds": plan.seconds}
    rows = [run("atcrl.bench.scaling:env_steps_per_s", spec=ATARI_SPEC, num_envs=n, **common)
            for n in sorted(plan.num_envs)]
    rows.append(run("atcrl.bench.scaling:env_steps_per_s", spec=DMC_SPEC, num_envs=1, vector=False, fast_render=True,
                    **common))
    return rows


# --------------------------------------------------------------------------- data-parallel pretraining


def record_dataset(out: Path, episodes: int, image_size: int, max_steps: int | None) -> Path:
    """A random-policy dataset of ``DDP_DATA_SPEC`` recorded by ``atcrl collect``'s own code."""
    from atcrl.train.collect import CollectConfig, run_collect

    cfg = CollectConfig(episodes=episodes, out=str(out), env=DDP_DATA_SPEC, policy="random", image_size=image_size,
                        max_steps=max_steps)
    if run_collect(cfg) != 0:
        raise RuntimeError(f"atcrl collect --env {DDP_DATA_SPEC} failed (its message is above)")
    return out


def fast_flags(fast: FastPathConfig) -> list[str]:
    """``--fast.*`` command-line flags of ``atcrl pretrain`` that reproduce ``fast``."""
    flags = []
    for field in dataclasses.fields(fast):
        value, flag = getattr(fast, field.name), "fast." + field.name.replace("_", "-")
        if isinstance(value, bool) and field.name != "bf16":
            flags.append(f"--{flag}" if value else f"--fast.no-{field.name.replace('_', '-')}")
        else:
            flags += [f"--{flag}", str(value)]
    return flags


def ddp_pretrain(data: Path, out: Path, processes: int, fast: FastPathConfig, *, batch_size: int, updates: int,
                 device: str = "cpu", proc_env: dict[str, str | None] | None = None,
                 timeout: float = 3600.0) -> dict[str, Any]:
    """Offline ATC (DMC preset) under ``torchrun --nproc-per-node processes``; rates from its metrics.jsonl.

    Every process gets ``fast.threads`` intra-op threads (also as OMP_NUM_THREADS). The rate is the best
    and median of the logged windows after the first (that one holds the warm-up); perf/updates_per_s
    times sampling + forward + backward + step, not logging or checkpoints, averaged over ranks.
    cores_used = CPU seconds of the whole launch (start-up included) / its wall time: on a shared
    machine, how much CPU the job actually got.
    """
    from atcrl.metrics_log import read_jsonl

    log_every = max(1, updates // 8)
    if updates < 2 * log_every:
        raise ValueError(f"ddp updates must be >= 2 (one warm-up window and one timed), got {updates}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
           "-m", "atcrl.train.pretrain", "--data", str(data), "--preset", "dmc", "--out", str(out),
           "--updates", str(updates), "--batch-size", str(batch_size), "--log-every", str(log_every),
           "--eval-every", str(updates), "--ckpt-every", str(updates), "--val-fraction", "0", "--no-tensorboard",
           "--device", device, *fast_flags(fast)]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, fast.threads)))
    for name, value in (proc_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    start, cpu_before = time.perf_counter(), _children_cpu_s()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    launch_s, launch_cpu_s = time.perf_counter() - start, _children_cpu_s() - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} process(es) failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    rates = sorted((r["perf/updates_per_s"] for r in read_jsonl(out / "metrics.jsonl")[1:]
                    if "perf/updates_per_s" in r), reverse=True)
    if not rates:
        raise RuntimeError(f"{out / 'metrics.jsonl'} holds no timed window after the first")
    return {"processes": processes, "global_batch": batch_size, "per_process_batch": batch_size // processes,
            "updates": updates, "log_every": log_every, "updates_per_s": rates[0],
            "updates_per_s_median": rates[len(rates) // 2], "images_per_s": 2 * batch_size * rates[0],
            "windows": len(rates), "launch_s": launch_s, "launch_cpu_s": launch_cpu_s,
            "cores_used": launch_cpu_s / launch_s, "load_average": os.getloadavg()[0]}


def _children_cpu_s() -> float:
    """User + system CPU seconds of all finished child processes (torchrun reaps its workers, so theirs count)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ddp_rows(plan: ScalingPlan, device: str, threads: int,
              proc_env: dict[str, str | None] | None) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="atcrl-bench-ddp-") as tmp:
        data = record_dataset(Path(tmp) / "data", plan.ddp_episodes, plan.ddp_image_size, plan.ddp_max_steps)
        for name, fast in variants(threads).items():
            if name not in plan.ddp_variants:
                continue
            for n in plan.ddp_processes:
                result = ddp_pretrain(data, Path(tmp) / f"run-{name.replace(' ', '-')}-{n}", n, fast,
                                      batch_size=plan.ddp_batch_size, updates=plan.ddp_updates, device=device,
                                      proc_env=proc_env)
                rows.append({"variant": name, "data": DDP_DATA_SPEC, "image_size": plan.ddp_image_size,
                             "threads_per_process": fast.threads, **result})
    return rows


def quick_plan(cfg_ddp_processes: tuple[int, ...]) -> ScalingPlan:
    """Tiny sizes for smoke tests: seconds, not minutes (figures meaningless)."""
    return ScalingPlan(batch_sizes=(8, 16), num_envs=(1, 2), ddp_processes=cfg_ddp_processes,
                       ddp_batch_size=8 * int(np.lcm.reduce(cfg_ddp_processes)), ddp_updates=4, reps=1, warmup=1,
                       seconds=0.0, matmul_n=256, atc_transitions=600, env_block=5, ddp_episodes=3,
                       ddp_image_size=40, ddp_max_steps=20, ddp_variants=("fast path",))
