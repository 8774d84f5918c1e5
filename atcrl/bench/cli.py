"""`atcrl bench`: what this machine can do, and what the fast path gets out of it, as JSON + a markdown table.

    atcrl bench                          # everything, ~30-45 min on a 2-core CPU (scaling: ~10-12)
    atcrl bench --only encoder,atc       # some sections
    atcrl bench --quick                  # smoke test: tiny sizes, seconds
    atcrl bench --only scaling           # scaling curves (batch size, envs, DDP processes) + PNG plots
    atcrl bench --plot-only bench/out    # redraw the PNG plots from an existing bench.json

Every fast-path figure is set next to the plain fp32 eager path of the same code. Measurements
whose process-wide state matters (allocator, threads, compiled graphs) run in fresh processes,
one per configuration; ``--quick`` runs everything in this process instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atcrl import cpus, fastpath, process
from atcrl.bench.agents import run_average_ul_updates
from atcrl.bench.compute import ENCODER_INPUTS, ablation, encoder_flops_per_image, matmul_gflops
from atcrl.bench.plots import plot_report, replot
from atcrl.bench.report import derive, write_markdown
from atcrl.bench.scaling import ScalingPlan, quick_plan, run_scaling
from atcrl.bench.timing import in_subprocess
from atcrl.device import resolve_device
from atcrl.fastpath import FastPathConfig

SECTIONS = ("roofline", "encoder", "threads", "allocator", "atc", "accuracy", "replay", "envs", "agents", "scaling")


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark the machine (matmul roofline), the encoders, ATC, replay, envs and agents."""

    out: Path = Path("bench/out")
    """Directory for bench.json and bench.md (bench/out/ is git-ignored)."""
    only: tuple[str, ...] = ()
    """Sections to run (comma- or space-separated), e.g. `--only encoder,atc`; empty = all of: roofline, encoder,
    threads, allocator, atc, accuracy, replay, envs, agents, scaling."""
    quick: bool = False
    """Smoke test: tiny batches, one repetition, tiny envs, everything in this process (figures meaningless)."""
    device: str = "auto"
    """"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"."""
    threads: int = 0
    """Intra-op threads for every measurement except the threads section; 0 = the fast path's auto choice,
    resolved once at start so all rows use the same number."""
    compile: bool = True
    """Include the torch.compile row in the encoder ablation (compiling takes a minute or two on CPU)."""
    batch_sizes: tuple[int, ...] = (128, 512)
    """Encoder-training batch sizes."""
    seconds: float = 3.0
    """Minimum timed seconds per measurement (at least 5 repetitions)."""
    accuracy_updates: int = 200
    """ATC updates per run in the accuracy check."""
    accuracy_seeds: int = 3
    """Seeds per variant in the accuracy check (the tolerance comes from their spread)."""
    replay_transitions: int = 100_000
    """Transitions in the replay-memory measurement."""
    scaling_batch_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    """Scaling section: batch sizes of the encoder-training (DMC and Atari encoders) and ATC-pretraining curves."""
    scaling_num_envs: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    """Scaling section: numbers of envs in the atari:Pong vector env (ALE's threaded vector env)."""
    scaling_ddp_processes: tuple[int, ...] = (1, 2)
    """Scaling section: torchrun process counts for offline ATC pretraining (gloo, same global batch, --threads
    intra-op threads each); the first is the reference of the speed-up ratios."""
    scaling_ddp_batch_size: int = 256
    """Scaling section: global ATC batch of the DDP runs (the DMC preset's), split evenly over the processes."""
    scaling_ddp_updates: int = 40
    """Scaling section: updates per DDP run; the first eighth (one log window) is warm-up and not timed."""
    plot_only: Path | None = None
    """Measure nothing: redraw the PNG plots from DIR/bench.json into DIR (e.g. after changing the plots)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown bench section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        if self.threads < 0 or self.seconds < 0 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("threads and seconds must be >= 0 and batch_sizes positive")
        if self.accuracy_updates < 1 or self.accuracy_seeds < 1 or self.replay_transitions < 1000:
            raise ValueError("accuracy_updates and accuracy_seeds must be >= 1, replay_transitions >= 1000")
        for name, low in (("scaling_batch_sizes", 2), ("scaling_num_envs", 1), ("scaling_ddp_processes", 1)):
            values = getattr(self, name)
            if not values or min(values) < low:
                raise ValueError(f"{name} must be a non-empty list of integers >= {low}, got {list(values)}")
        bad = [n for n in self.scaling_ddp_processes if self.scaling_ddp_batch_size % n]
        if self.scaling_ddp_batch_size < 2 or bad:
            raise ValueError(f"scaling_ddp_batch_size {self.scaling_ddp_batch_size} must be >= 2 and split evenly "
                             f"over every process count in scaling_ddp_processes (not over {bad})")
        if self.scaling_ddp_updates < 4:
            raise ValueError(f"scaling_ddp_updates must be >= 4 (a warm-up window plus timed ones), "
                             f"got {self.scaling_ddp_updates}")

    @property
    def sections(self) -> tuple[str, ...]:
        names = [n.strip() for item in self.only for n in item.split(",") if n.strip()]
        return tuple(names) or SECTIONS


@dataclass(frozen=True)
class Sizes:
    """What full and quick runs measure."""

    batch_sizes: tuple[int, ...]
    reps: int
    warmup: int
    seconds: float
    matmul_n: int
    replay_transitions: int


def _sizes(cfg: BenchConfig) -> Sizes:
    if cfg.quick:
        return Sizes((8,), 1, 1, 0.0, 256, 1000)
    return Sizes(cfg.batch_sizes, 5, 2, cfg.seconds, 2048, cfg.replay_transitions)


class _Runner:
    """Calls a benchmark function in a fresh process (full runs) or in this one (quick runs)."""

    def __init__(self, isolated: bool):
        self.isolated = isolated

    def __call__(self, target: str, proc_env: dict[str, str | None] | None = None, **kwargs: Any) -> Any:
        if self.isolated:
            return in_subprocess(target, kwargs, env=proc_env)
        import importlib

        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(**kwargs)


# --------------------------------------------------------------------------- sections


def bench_roofline(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    torch.set_num_threads(threads)
    return {"threads": threads, **{p: matmul_gflops(p, s.matmul_n, reps=max(3, 2 * s.reps), device=device)
                                   for p in ("fp32", "bf16")}}


def bench_encoder(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    rows = []
    for variant in ablation(threads, with_compile=cfg.compile and not cfg.quick):
        for arch in ENCODER_INPUTS:
            result = run("atcrl.bench.compute:encoder_training", proc_env=_no_malloc_env(), arch=arch,
                         batch_sizes=list(s.batch_sizes), fast=dataclasses.asdict(variant.fast), device=device,
                         reps=s.reps, warmup=s.warmup, min_seconds=s.seconds)
            for batch, timing in result["results"].items():
                rows.append({"variant": variant.name, "default": variant.default, "arch": arch, "batch": int(batch),
                             "fastpath": result["fastpath"], **timing})
    return {"flops_per_image": {a: encoder_flops_per_image(a) for a in ENCODER_INPUTS}, "rows": rows}


def bench_threads(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    """DMC encoder training at 1 thread and at every core, on idle cores and beside a process spinning on one.

    Full runs add every-core rows with OMP_WAIT_POLICY=PASSIVE (read at process start, so only a fresh
    process can have it): threads that sleep instead of spinning while they wait for each other.
    """
    cores = cpus.usable_cores()
    auto_now = process.resolve_threads(0)
    variants = [(n, None) for n in sorted({1, cores})] + ([(cores, "PASSIVE")] if cores > 1 and run.isolated else [])
    rows = []
    for spinners in sorted({0, min(1, cores - 1)}):
        with spinning(spinners):
            for n, policy in variants:
                result = run("atcrl.bench.compute:encoder_training",
                             proc_env={**_no_malloc_env(), "OMP_WAIT_POLICY": policy}, arch="dmc",
                             batch_sizes=list(s.batch_sizes), fast=dataclasses.asdict(FastPathConfig(threads=n)),
                             device=device, reps=s.reps, warmup=s.warmup, min_seconds=s.seconds)
                rows += [{"threads": n, "wait_policy": policy or "default", "spinning_processes": spinners,
                          "arch": "dmc", "batch": int(b), **t} for b, t in result["results"].items()]
    return {"cores": cores, "auto_threads_now": auto_now, "rows": rows}


@contextlib.contextmanager
def spinning(processes: int) -> Iterator[None]:
    """``processes`` busy-looping Python processes for the duration: other jobs holding cores, on purpose."""
    procs = [subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"], stdout=subprocess.PIPE)
             for _ in range(processes)]
    try:
        for proc in procs:
            proc.stdout.readline()  # type: ignore[union-attr]  # running
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def bench_allocator(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    batch = max(s.batch_sizes)
    plain = dataclasses.asdict(FastPathConfig(threads=threads, tune_allocator=False))
    tuned = dataclasses.asdict(FastPathConfig(threads=threads))
    ways = [("glibc defaults", plain, _no_malloc_env()),
            ("MALLOC_* env at process start", plain, {**_no_malloc_env(), **process.MALLOC_ENV}),
            ("mallopt at run time (fast path)", tuned, _no_malloc_env())]
    rows = []
    for name, fast, proc_env in ways:
        result = run("atcrl.bench.compute:encoder_training", proc_env=proc_env, arch="dmc", batch_sizes=[batch], fast=fast,
                     device=device, reps=s.reps, warmup=s.warmup, min_seconds=s.seconds)
        rows.append({"allocator": name, "arch": "dmc", "batch": batch, **result["results"][str(batch)]})
    return {"rows": rows}


def bench_atc(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    rows = []
    for preset in ("dmc", "atari"):
        for name, fast in (("fp32 eager", FastPathConfig.fp32_eager(threads)), ("fast path", FastPathConfig(threads=threads))):
            result = run("atcrl.bench.ul:atc_throughput", proc_env=_no_malloc_env(), preset=preset,
                         fast=dataclasses.asdict(fast), device=device, transitions=5000 if not cfg.quick else 600,
                         batch_size=16 if cfg.quick else 0, reps=s.reps, warmup=s.warmup, min_seconds=s.seconds)
            rows.append({"preset": preset, "variant": name, **result})
    return {"rows": rows}


def bench_accuracy(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    from atcrl.bench.ul import atc_accuracy

    torch.set_num_threads(threads)
    variants = {"fp32 eager": FastPathConfig.fp32_eager(threads), "fast path (default)": FastPathConfig(threads=threads),
                "bf16 forced": FastPathConfig(threads=threads, bf16=True)}
    if cfg.quick:
        return atc_accuracy("tiny:point", variants, episodes=3, val_episodes=2, updates=2, batch_size=16,
                            seeds=[0], val_batches=1, device=device)
    return atc_accuracy("dmc:cartpole-swingup", variants, episodes=16, val_episodes=4, updates=cfg.accuracy_updates,
                        batch_size=128, seeds=list(range(cfg.accuracy_seeds)), device=device)


def bench_replay(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    return run("atcrl.bench.data:replay_memory", transitions=s.replay_transitions,
               batch_size=512 if not cfg.quick else 32, batches=20 if not cfg.quick else 2)


def bench_envs(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    from atcrl.bench.data import env_rates

    if cfg.quick:
        return {"rows": env_rates([("tiny:point", False, 1)], steps=10)}
    specs = [("dmc:cartpole-swingup", False, 1), ("dmc:cartpole-swingup", True, 1), ("atari:Pong", False, 16)]
    return {"rows": env_rates(specs, steps=300)}


OVERLAP = "fast path + overlap"
"""Agents variant: the default fast path with the loop's overlap option on (SAC overlap_env, PPO overlap_ul)."""


def bench_agents(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    """SAC per encoder mode and PPO + ATC, through the loops' own API (see atcrl/bench/agents.py)."""
    rows: list[dict[str, Any]] = []
    all_modes = ("end_to_end", "decoupled", "frozen")
    fast_path = FastPathConfig(threads=threads)
    # (variant, fast path, the loops' overlap options on, SAC modes); overlap changes results slightly, so it
    # is off by default and measured only where it can matter.
    variants = (("fp32 eager", FastPathConfig.fp32_eager(threads), False, all_modes),
                ("fast path", fast_path, False, all_modes), (OVERLAP, fast_path, True, ("decoupled", "frozen")))
    sac = {"env": "tiny:point", "batch_size": 8, "updates": 2} if cfg.quick else {"updates": 20}
    ppo = {"env": "tiny:catch", "num_envs": 2, "iterations": 1} if cfg.quick else {}
    # The UL schedule's first iteration (6 updates) and its average over a paper-length run.
    average = run_average_ul_updates()
    ppo_schedules = (("PPO + ATC", None), (f"PPO + ATC, run-average {average} UL updates/iteration", average))
    for name, fast, overlap, modes in variants:
        common = {"proc_env": _no_malloc_env(), "fast": dataclasses.asdict(fast), "device": device}
        for mode in modes:
            rows.append(_guarded(run, "atcrl.bench.agents:sac_steps_per_s", {"agent": f"SAC {mode}", "variant": name},
                                 mode=mode, overlap_env=overlap, **common, **sac))
        if not cfg.quick:  # the quick PPO would need a UL batch small enough for a two-env, one-rollout replay
            for agent, ul_updates in ppo_schedules:
                rows.append(_guarded(run, "atcrl.bench.agents:ppo_steps_per_s", {"agent": agent, "variant": name},
                                     overlap_ul=overlap, ul_updates=ul_updates, **common, **ppo))
    return {"rows": rows}


def bench_scaling(cfg: BenchConfig, s: Sizes, device: str, threads: int, run: _Runner) -> dict[str, Any]:
    """Throughput vs batch size, vs number of envs, and vs DDP processes (see atcrl/bench/scaling.py)."""
    if cfg.quick:
        plan = quick_plan(cfg.scaling_ddp_processes)
    else:
        plan = ScalingPlan(batch_sizes=cfg.scaling_batch_sizes, num_envs=cfg.scaling_num_envs,
                           ddp_processes=cfg.scaling_ddp_processes, ddp_batch_size=cfg.scaling_ddp_batch_size,
                           ddp_updates=cfg.scaling_ddp_updates, reps=s.reps, warmup=s.warmup, seconds=s.seconds,
                           matmul_n=s.matmul_n)
    return run_scaling(plan, run, device, threads, proc_env=_no_malloc_env())


def _guarded(run: _Runner, target: str, labels: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``labels`` plus the result of ``run(target, **kwargs)``, or plus the error it raised."""
    # An agent loop that is mid-change elsewhere must not take the other sections' figures down with it.
    try:
        return {**labels, **run(target, **kwargs)}
    except Exception as e:  # noqa: BLE001
        return {**labels, "error": f"{type(e).__name__}: {e}"[:2000]}


def _no_malloc_env() -> dict[str, str | None]:
    """Child processes start from glibc defaults unless a row asks otherwise."""
    return {name: None for name in process.MALLOC_ENV}


# --------------------------------------------------------------------------- driver


def machine_info(device: str) -> dict[str, Any]:
    model = ""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device, "bf16_native": fastpath.bf16_native(device),
            "bf16_faster": fastpath.bf16_faster(device), "load_average_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run_bench(cfg: BenchConfig) -> int:
    """Run the chosen sections, write bench.json, bench.md and plots to cfg.out; 1 if any section failed.

    With cfg.plot_only, only redraw the plots of an existing bench.json (2 if there is none).
    """
    if cfg.plot_only is not None:
        try:
            paths = replot(cfg.plot_only)
        except (FileNotFoundError, ValueError) as e:
            print(f"atcrl bench: error: {e}", file=sys.stderr)
            return 2
        print("atcrl bench: wrote " + (", ".join(map(str, paths)) or "no plots (no section with plots in bench.json)"))
        return 0
    device = str(resolve_device(cfg.device))
    threads = process.resolve_threads(cfg.threads)
    sizes, runner = _sizes(cfg), _Runner(isolated=not cfg.quick)
    report: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
                              "machine": machine_info(device), "threads": threads, "sections": {}}
    failed = []
    for name in cfg.sections:
        start = time.perf_counter()
        print(f"atcrl bench: {name} ...", flush=True)
        try:
            result = globals()[f"bench_{name}"](cfg, sizes, device, threads, runner)
        except Exception as e:  # noqa: BLE001 -- one broken section must not lose the others' results
            result = {"error": f"{type(e).__name__}: {e}"[:2000]}
        if result.get("error") or result.get("errors"):  # "errors": parts of a section that failed
            failed.append(name)
        result["seconds"] = time.perf_counter() - start
        report["sections"][name] = result
        report["machine"]["load_average_end"] = os.getloadavg()
        _write(cfg.out, report)  # after every section, so a long run's finished figures are never lost
    print(f"atcrl bench: wrote {cfg.out / 'bench.json'} and {cfg.out / 'bench.md'}"
          + (f"; failed sections: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def _write(out: Path, report: dict[str, Any]) -> None:
    derive(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(write_markdown(report))
    try:
        plot_report(report, out)
    except Exception as e:  # noqa: BLE001 -- the figures are on disk already; a plot must not stop the run
        print(f"atcrl bench: warning: plotting failed ({type(e).__name__}: {e}); "
              f"retry with `atcrl bench --plot-only {out}`", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import tyro

    return run_bench(tyro.cli(BenchConfig, args=argv, prog="atcrl bench"))


if __name__ == "__main__":
    raise SystemExit(main())
