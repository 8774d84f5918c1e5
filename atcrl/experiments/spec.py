"""What an experiment is: named steps (one `atcrl` command each) with dependencies, at one scale.

A plan is data: building one runs nothing, so `--dry-run`, `--list` and the tests can inspect
every command. The runner (runner.py) executes steps as subprocesses in their plan order,
respecting ``depends``; every dependency is defined earlier in the plan, which keeps plans acyclic
by construction and gives the sequential order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Scale = Literal["full", "cpu-small", "gpu", "tiny"]
"""full: the paper's budget; cpu-small: about an hour on a 2-core CPU; gpu: one GPU shared by every run of
the experiment (`--device cuda --jobs 8`), the paper's settings where they fit and named reductions where
they do not (online and ul-benchmark only; scales.py); tiny: a smoke test of seconds on tiny envs (its
numbers mean nothing; the tests use it)."""
SCALES: tuple[Scale, ...] = ("full", "cpu-small", "gpu", "tiny")
Kind = Literal["train", "collect", "pretrain", "probe", "export"]
KINDS: tuple[Kind, ...] = ("train", "collect", "pretrain", "probe", "export")
Status = Literal["pending", "running", "done", "failed", "skipped"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PlanError(ValueError):
    """A plan is malformed, or cannot be built from the options given; the message says why."""


@dataclass(frozen=True)
class Step:
    """One `atcrl` command of an experiment."""

    id: str
    """Unique, filesystem-safe; also the output path relative to the experiment directory."""
    kind: Kind
    """The `atcrl` subcommand (export also covers `atcrl export`)."""
    group: str
    """What is compared, e.g. "online-dmc", "frozen-rl", "probe", "pretrain"."""
    variant: str
    """The compared thing within the group, e.g. "decoupled-atc", "end-to-end", "cpc"."""
    seed: int
    env: str | None
    """The env the step acts in or whose data it reads (several: the first; None: not one env)."""
    command: tuple[str, ...]
    """argv after `atcrl`, with paths relative to the experiment directory (the runner's cwd)."""
    depends: tuple[str, ...] = ()
    """Ids of the steps whose outputs this one reads."""
    estimate_s: float = 0.0
    """Estimated run time in seconds at one thread on the reference 2-core CPU (see cost.py)."""
    gpu_estimate_s: float | None = None
    """Estimated run time in seconds on one GPU shared by cost.GPU_RUNS steps; None: not measured for this
    kind of step (cost.py says what was measured)."""

    @property
    def out(self) -> str:
        """Output path relative to the experiment directory: a .json file for probes, else a directory."""
        return f"{self.id}.json" if self.kind == "probe" else self.id

    @property
    def external_inputs(self) -> tuple[str, ...]:
        """Paths outside the experiment this step reads (another experiment's outputs, given to the plan by
        --expert/--data/--probe-data/--encoder): a step names them, and only them, by absolute path;
        the outputs of its own experiment it names relative to the experiment directory, in ``depends``."""
        return tuple(dict.fromkeys(tok for tok in self.command if tok.startswith("/")))

    @property
    def log(self) -> str:
        """Where the step's stdout+stderr go: beside its output, because train/pretrain/collect refuse
        to write into a non-empty directory."""
        return f"{self.id}.log"


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper at one scale."""

    name: str
    scale: Scale
    seeds: tuple[int, ...]
    question: str
    """The paper claim the experiment tests."""
    notes: str
    """How this scale differs from the paper, and why."""
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        check_steps(self.steps)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def inputs(self, step: Step) -> dict[str, str | None]:
        """Everything ``step`` reads, path -> the id of the step of this plan that makes it (None: external):
        its dependencies' outputs (relative to the experiment directory), then its external inputs."""
        return {**{self.step(d).out: d for d in step.depends}, **dict.fromkeys(step.external_inputs)}

    def dependants(self, step_id: str) -> set[str]:
        """Ids of every step that needs ``step_id``, directly or through others."""
        found: set[str] = set()
        for s in self.steps:  # plan order is a topological order
            if step_id in s.depends or found.intersection(s.depends):
                found.add(s.id)
        return found


def check_steps(steps: tuple[Step, ...]) -> None:
    """PlanError unless ids are unique and safe, kinds known, and each dependency defined earlier."""
    seen: set[str] = set()
    for s in steps:
        if not _SAFE_ID.match(s.id):
            raise PlanError(f"step id {s.id!r} is not filesystem-safe (letters, digits, '.', '_', '-')")
        if s.id in seen:
            raise PlanError(f"step id {s.id!r} appears twice")
        if s.kind not in KINDS:
            raise PlanError(f"step {s.id}: unknown kind {s.kind!r}")
        if not s.command or s.command[0] != s.kind:
            raise PlanError(f"step {s.id}: a {s.kind} step must run `atcrl {s.kind}`, got {list(s.command)}")
        if unknown := [d for d in s.depends if d not in seen]:
            raise PlanError(f"step {s.id} depends on {unknown}, which are not defined before it "
                            "(a dependency must come earlier in the plan)")
        seen.add(s.id)
