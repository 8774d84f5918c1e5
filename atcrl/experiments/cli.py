"""``atcrl experiment``: one paper experiment as one command, at full, cpu-small or gpu scale, resumable.

    atcrl experiment --list
    atcrl experiment ul-benchmark --scale cpu-small --out runs/exp/ul --dry-run
    atcrl experiment ul-benchmark --scale cpu-small --out runs/exp/ul --jobs 2
    atcrl experiment online --scale full --jobs 8 --device cuda          # 8 steps share one GPU
    atcrl experiment online --scale gpu --jobs 8 --device cuda           # cartpole, 2 variants x 4 seeds at once
    atcrl experiment ul-benchmark --scale full --executor ray --address auto --jobs 64 \
        --cpus-per-step 2 --gpus-per-step 0.125
    atcrl experiment ablations --scale cpu-small --out runs/exp/abl --jobs 2 --data runs/exp/ul/demos-cartpole-swingup \\
        --probe-data runs/exp/ul/probe-data-cartpole-swingup
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from atcrl.experiments import cost, plans, scales
from atcrl.experiments.executors import Executor, LocalExecutor
from atcrl.experiments.offline import Reuse
from atcrl.experiments.runner import Runner, plan_states
from atcrl.experiments.spec import Experiment, PlanError, Scale

ExperimentName = Literal["online", "ul-benchmark", "multitask", "ablations", "latent-replay"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Run one experiment of the paper: every step (train, collect, pretrain, probe) as a resumable subprocess."""

    name: Annotated[tyro.conf.Positional[ExperimentName | None], tyro.conf.arg(metavar="NAME")] = None
    """Experiment: online, ul-benchmark, multitask, ablations or latent-replay (--list describes them)."""
    scale: Scale = "cpu-small"
    """full: the paper's budget (GPU-sized); cpu-small: about an hour on a 2-core CPU with --jobs 2; gpu (online and
    ul-benchmark only): one GPU with --device cuda --jobs 8, the paper's settings but for named reductions (each
    plan's notes list them); tiny: a seconds-long smoke test on tiny envs (numbers mean nothing)."""
    seeds: int | None = None
    """Run seeds 0..K-1; None = the experiment's default (full 3; cpu-small 1, online 2; gpu 1, online 4). A re-run with more
    seeds in the same --out adds the new seeds' steps."""
    out: str | None = None
    """Experiment directory (experiment.json, one output and one .log per step); None =
    runs/experiments/<name>-<scale>. Running the same command again resumes it."""
    jobs: int = 1
    """Steps run at once (dependencies respected). Each step may use usable cores // jobs threads
    (OMP_NUM_THREADS, unless set in the environment) and takes those of them that are idle when it starts."""
    device: Literal["cpu", "cuda"] | None = None
    """Device of the steps that compute (train, pretrain, probe), passed to each attempt as --device (not part of
    the plan: a resumed step may move); None = each command's default. With --jobs N and cuda, N steps share
    the GPU, each with usable cores // N CPU threads."""
    executor: Literal["local", "ray"] = "local"
    """local: steps as subprocesses of this command; ray: steps as Ray tasks (atcrl/experiments/ray_executor.py),
    up to --jobs submitted at once, with OUT on a filesystem every node sees. Needs `pip install "atcrl[ray]"`."""
    address: str | None = None
    """--executor ray: the Ray cluster ("auto": the one running here, or ray://HOST:PORT); None = start a local one."""
    cpus_per_step: float = 1.0
    """--executor ray: CPUs each step requests (and its torch threads)."""
    gpus_per_step: float = 0.0
    """--executor ray: GPUs each train, pretrain or probe step requests; a fraction shares one (0.125 = 8 per GPU)."""
    dry_run: bool = False
    """Print the plan (every command, in order, with estimated times) and run nothing."""
    list_experiments: Annotated[bool, tyro.conf.arg(name="list")] = False
    """List the experiments: the claim each tests, and steps and estimated time per scale."""
    expert: str | None = None
    """Reuse this `atcrl train` run as the expert instead of training one (ul-benchmark, ablations, latent-replay)."""
    data: str | None = None
    """Reuse this dataset of demonstrations (e.g. another experiment's OUT/demos-<task>) instead of recording one."""
    probe_data: str | None = None
    """Reuse this dataset for the probes (e.g. OUT/probe-data-<task>); without it, --data alone makes the probes
    read --data (an --expert records new probe episodes)."""
    encoder: str | None = None
    """latent-replay: reuse this exported encoder (e.g. another experiment's OUT/pretrain-atc-s0) instead of
    pretraining one."""

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {self.jobs}")
        if self.seeds is not None and self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")


def run_experiment(cfg: ExperimentConfig) -> int:
    """``atcrl experiment``: 0 when every step is done, 1 when some failed, 2 on bad input, 130 when interrupted."""
    try:
        if cfg.list_experiments:
            print(listing())
            return 0
        if cfg.name is None:
            raise PlanError(f"name an experiment ({', '.join(plans.NAMES)}), or pass --list")
        exp = plans.build(cfg.name, cfg.scale, cfg.seeds, reuse_of(cfg))
        out = Path(cfg.out or default_out(cfg.name, cfg.scale))
        if cfg.dry_run:
            print(dry_run(exp, out, cfg.jobs))
            return 0
        return Runner(exp, out, jobs=cfg.jobs, device=cfg.device, command=invocation(cfg, exp),
                      executor=executor_of(cfg)).run()
    except PlanError as e:
        print(f"atcrl experiment: error: {e}", file=sys.stderr)
        return 2


def executor_of(cfg: ExperimentConfig) -> Executor:
    if cfg.executor == "local":
        if (cfg.address, cfg.cpus_per_step, cfg.gpus_per_step) != (None, 1.0, 0.0):
            raise PlanError("--address, --cpus-per-step and --gpus-per-step apply to --executor ray only")
        return LocalExecutor()
    from atcrl.experiments.ray_executor import RayExecutor

    return RayExecutor(cfg.address, cpus=cfg.cpus_per_step, gpus=cfg.gpus_per_step)


def default_out(name: str, scale: str) -> Path:
    return Path("runs") / "experiments" / f"{name}-{scale}"


def reuse_of(cfg: ExperimentConfig) -> Reuse:
    """The reuse options as absolute paths (steps run inside the experiment directory); each must exist."""
    paths = {}
    for name in ("expert", "data", "probe_data", "encoder"):
        value = getattr(cfg, name)
        if value is not None:
            path = Path(value).resolve()
            if not path.exists() and not (name == "encoder" and path.with_suffix(".safetensors").exists()):
                raise PlanError(f"--{name.replace('_', '-')} {value} does not exist")
            paths[name] = str(path)
    return Reuse(**paths)


def invocation(cfg: ExperimentConfig, exp: Experiment) -> list[str]:
    """The `atcrl experiment` argv that runs this experiment, as recorded in experiment.json."""
    argv = ["atcrl", "experiment", exp.name, "--scale", exp.scale, "--seeds", str(len(exp.seeds)),
            "--out", str(cfg.out or default_out(exp.name, exp.scale)), "--jobs", str(cfg.jobs)]
    if cfg.device is not None:
        argv += ["--device", cfg.device]
    if cfg.executor != "local":
        argv += ["--executor", cfg.executor, "--cpus-per-step", str(cfg.cpus_per_step),
                 "--gpus-per-step", str(cfg.gpus_per_step)] + (["--address", cfg.address] if cfg.address else [])
    reuse = reuse_of(cfg)
    for name in ("expert", "data", "probe_data", "encoder"):
        if getattr(reuse, name) is not None:
            argv += [f"--{name.replace('_', '-')}", getattr(reuse, name)]
    return argv


def estimate_line(exp: Experiment, jobs: int) -> str:
    cpu = cost.total_seconds(exp.steps)
    line = (f"{len(exp.steps)} steps, seeds {list(exp.seeds)}: about {cost.describe_seconds(cpu)} of single-thread "
            "CPU time on the reference 2-core CPU")
    if exp.scale in ("full", "gpu"):
        return line + " (meant for GPUs, where it is far shorter)"
    return line + f", {cost.describe_seconds(cost.wall_seconds(exp.steps, jobs))} with --jobs {jobs}"


def dry_run(exp: Experiment, out: Path, jobs: int) -> str:
    """The plan as shell commands (run from OUT), each after a comment naming the step."""
    states = plan_states(exp, out)
    lines = [f"# experiment {exp.name}, scale {exp.scale}: {estimate_line(exp, jobs)}",
             f"# on one GPU: {cost.gpu_line(exp.steps, jobs)}",
             f"# question: {exp.question}", f"# notes: {exp.notes}", f"cd {shlex.quote(str(out))}"]
    for i, step in enumerate(exp.steps, 1):
        after = f"; after {', '.join(step.depends)}" if step.depends else ""
        done = "; done, would be skipped" if states[step.id] == "done" else ""
        gpu = "not measured" if step.gpu_estimate_s is None else cost.describe_seconds(step.gpu_estimate_s)
        lines.append(f"# [{i}/{len(exp.steps)}] {step.id}: {step.kind} {step.group}/{step.variant} seed {step.seed}, "
                     f"est. {cost.describe_seconds(step.estimate_s)} (one GPU: {gpu}){after}{done}")
        lines.append("atcrl " + shlex.join(step.command))
    return "\n".join(lines)


def listing() -> str:
    lines = []
    for name in plans.NAMES:
        module = plans.definition(name)
        lines += [name, f"  question: {module.QUESTION}"]
        for scale in ("full", "cpu-small", "gpu"):
            if scale == "gpu" and name not in scales.GPU_EXPERIMENTS:
                lines.append(f"  {scale}: none (only {', '.join(scales.GPU_EXPERIMENTS)} have a gpu scale)")
                continue
            exp = plans.build(name, scale)
            jobs = scales.GPU_JOBS if scale == "gpu" else cost.GPU_RUNS
            lines += [f"  {scale}:", f"    cpu: {estimate_line(exp, 2)}", f"    one GPU: {cost.gpu_line(exp.steps, jobs)}"]
        lines.append("")
    lines.append("CPU times are estimates from speeds measured at one thread per step (atcrl/experiments/cost.py); "
                 "with --jobs 1 on idle cores a step takes every core (1.5-1.8x faster on 2 cores).")
    lines.append(f"GPU times: from one measurement ({cost.GPU_MEASURED}) and the labelled assumptions in cost.py; "
                 "steps of other kinds have no GPU figure yet and are listed as not measured.")
    return "\n".join(lines)
