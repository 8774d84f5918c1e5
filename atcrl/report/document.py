"""report.md: one section per experiment (and one for runs given directly), figures beside it.

Within an experiment, steps are shown by (group, kind): learning curves and final returns for
train steps, R² for probes, validation numbers for pretraining; a train group and a probe group
that share variant names are also joined in one table. The "claims" are plain comparisons of
numbers; interpreting them is left to the reader.
"""

from __future__ import annotations

import os
import re
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from atcrl.report import evidence, plots
from atcrl.report.anchors import SOURCE, at_budget
from atcrl.report.load import Experiment, Step
from atcrl.report.runs import TRAIN_WINDOW, PretrainRun, ProbeRun, Result, TrainRun
from atcrl.report.stats import (
    SPREAD_LABEL,
    Spread,
    Stat,
    TrainCell,
    ValueCell,
    compare,
    fmt_steps,
    mean_curve,
    pretrain_cell,
    probe_cell,
    train_cell,
)
from atcrl.report.tables import (
    budget,
    join_table,
    md_table,
    pretrain_table,
    probe_table,
    probe_target_table,
    quoted_table,
    train_table,
)

NOT_DONE = ("failed", "skipped", "pending", "running", "unknown")


@dataclass
class Doc:
    out: Path
    spread: Spread
    lines: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    _names: Counter = field(default_factory=Counter)

    def add(self, *text: str) -> None:
        self.lines.extend(text)

    def figure_path(self, *parts: str) -> Path:
        base = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "-", p).strip("-") for p in parts if p) or "figure"
        self._names[base] += 1
        suffix = f"-{self._names[base]}" if self._names[base] > 1 else ""
        return self.out / f"{base}{suffix}.png"

    def rel(self, path: Path) -> str:
        """A path as seen from the report's directory, so a rebuilt report reads the same wherever it is built."""
        return os.path.relpath(path, self.out)

    def figure(self, path: Path, alt: str) -> None:
        self.figures.append(path)
        self.add(f"![{alt}]({path.name})", "")


# --------------------------------------------------------------------------- sections by kind


def _ordered(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _env(step: Step) -> str:
    return step.env or (step.result.env if isinstance(step.result, TrainRun) else "?")


def train_section(doc: Doc, steps: list[Step], label: str, claims: list[str]) -> list[TrainCell]:
    envs = _ordered([_env(s) for s in steps])
    variants = _ordered([s.variant for s in steps])
    cells = [train_cell(env, v, members) for env in envs for v in variants
             if (members := [s for s in steps if _env(s) == env and s.variant == v])]
    panels = {env: {c.variant: curve for c in cells if c.env == env if (curve := mean_curve(c.runs, doc.spread))}
              for env in envs}
    panels = {env: curves for env, curves in panels.items() if curves}
    training = [c for c in cells if any(r.curve == "train" for r in c.runs)]
    all_training = bool(training) and len(training) == len(cells)
    what = "training episode return" if all_training else "eval return"
    final = "final training score" if all_training else "final return" if training else "final eval return"
    if panels:
        anchors = {env: at_budget(env, n) for env in panels if (n := budget(cells, env)) is not None}
        path = plots.learning_curves(doc.figure_path(label, "curves"), panels, anchors, SPREAD_LABEL[doc.spread],
                                     f"{label}: {what}", ylabel=what)
        doc.figure(path, f"{label} learning curves")
    else:
        doc.add("_No evaluation or training episode has been logged by any run of this group yet: no curves._", "")
    doc.add(train_table(cells, final), "")
    if quoted := quoted_table(cells):
        doc.add(quoted, "")
    evidence.statistics(doc, steps, steps[0].group, "final return", label)
    per_seed = "each seed's last training score (below)" if all_training else "each seed's last evaluation"
    doc.add(f"{final.capitalize()}: {per_seed}, then mean ± sample std over seeds. "
            "Agent steps/s overall: agent steps ÷ wall time, warm-up and evaluation included; last logged: the "
            "newest perf/steps_per_s, i.e. the current training speed.", "")
    if training:
        doc.add(f"Runs without evaluation ({', '.join(f'{c.env} / {c.variant}' for c in training)}): their curve and "
                f"\"{final}\" are the training episodes' raw score instead, each point the mean over the "
                f"last {TRAIN_WINDOW} logged intervals (what the paper plots for Atari).", "")
    _notes(doc, [(f"{c.env} / {c.variant}", n) for c in cells for n in c.notes])
    for env in envs:
        ranked = sorted((c for c in cells if c.env == env and c.final), key=lambda c: -c.final.mean)
        claims += [f"final return ({label}) on {env}: " + compare(ranked[0].variant, ranked[0].final, c.variant,
                                                                  c.final) for c in ranked[1:]]
    return cells


def _value_claims(what: str, cells: list[ValueCell], key: str, digits: int) -> list[str]:
    """The best variant (highest mean) against each other one, per env."""
    claims = []
    for env in dict.fromkeys(c.env for c in cells):
        ranked = sorted((c for c in cells if c.env == env and c.values.get(key)), key=lambda c: -c.values[key].mean)
        where = f"{what}" + (f" on {env}" if env else "")
        claims += [f"{where}: " + compare(ranked[0].variant, ranked[0].values[key], c.variant, c.values[key], digits)
                   for c in ranked[1:]]
    return claims


def _value_cells(steps: list[Step], make: Callable[[str, str | None, list[Step]], ValueCell]) -> list[ValueCell]:
    """One cell per (env, variant): seeds of one variant on different data are not pooled."""
    keys = list(dict.fromkeys((s.env, s.variant) for s in steps))
    return [make(v, env, [s for s in steps if (s.env, s.variant) == (env, v)]) for env, v in keys]


def _bars(cells: list[ValueCell], key: str) -> dict[str, Stat | None]:
    several_envs = len({c.env for c in cells}) > 1
    return {(f"{c.variant} @ {c.env}" if several_envs else c.variant): c.values.get(key) for c in cells}


def probe_section(doc: Doc, steps: list[Step], label: str, claims: list[str]) -> list[ValueCell]:
    cells = _value_cells(steps, probe_cell)
    if any(c.values["mean_r2"] for c in cells):
        path = plots.bars(doc.figure_path(label, "probe"), {"mean R²": _bars(cells, "mean_r2")},
                          f"{label}: linear probe of the physics state")
        doc.figure(path, f"{label} probe R²")
    doc.add(probe_table(cells), "")
    runs = [(s.variant, s.seed, s.result) for s in steps if isinstance(s.result, ProbeRun)]
    if table := probe_target_table(runs):
        doc.add("Per target: R² on the test episodes with its bootstrap 95% interval (whole test episodes "
                "resampled), beside a random encoder's probe of the same seed. Hinge angles are probed as their "
                "sine and cosine.", "", table, "")
    evidence.statistics(doc, steps, steps[0].group, "probe mean R²", label)
    _notes(doc, [(c.variant, n) for c in cells for n in c.notes])
    claims += _value_claims(f"probe mean R² ({label})", cells, "mean_r2", 3)
    return cells


def pretrain_section(doc: Doc, steps: list[Step], label: str, claims: list[str]) -> list[ValueCell]:
    cells = _value_cells(steps, pretrain_cell)
    series = {name: _bars(cells, key) for name, key in
              (("val accuracy", "val/accuracy"), ("val loss", "val/loss")) if any(c.values[key] for c in cells)}
    if series:
        doc.figure(plots.bars(doc.figure_path(label, "pretrain"), series, f"{label}: final validation"),
                   f"{label} validation")
    doc.add(pretrain_table(cells), "")
    doc.add("Losses of different objectives are on different scales; accuracy is only defined for contrastive "
            "objectives (chance = 1 / batch).", "")
    _notes(doc, [(c.variant, n) for c in cells for n in c.notes])
    claims += _value_claims(f"pretrain val accuracy ({label})", cells, "val/accuracy", 3)
    return cells


def _notes(doc: Doc, notes: list[tuple[str, str]]) -> None:
    if notes:
        doc.add("Partial or missing:", *(f"- {who}: {note}" for who, note in notes), "")


SECTIONS = {"train": train_section, "probe": probe_section, "pretrain": pretrain_section}


def group_sections(doc: Doc, steps: list[Step], prefix: str) -> None:
    """A section per (group, kind) with numbers, then joins, then the claims."""
    claims: list[str] = []
    found: dict[str, list[tuple[str, list]]] = {"train": [], "probe": [], "pretrain": []}
    for group in _ordered([s.group for s in steps]):
        for kind in _ordered([s.kind for s in steps if s.group == group]):
            if kind not in SECTIONS:
                continue
            members = [s for s in steps if s.group == group and s.kind == kind]
            doc.add(f"### {group} ({kind}, {len(members)} step{'s' if len(members) > 1 else ''})", "")
            found[kind].append((group, SECTIONS[kind](doc, members, f"{prefix} {group}".strip(), claims)))
    probes = [c for _, cells in found["probe"] for c in cells]
    pretrained = [c for _, cells in found["pretrain"] for c in cells]
    for t_group, t_cells in found["train"]:
        if table := join_table(t_cells, probes, pretrained):
            doc.add(f"### {t_group}: final return beside the probe and pretraining of the same variant", "", table, "")
    doc.add("### Comparisons (numbers only; the verdicts below decide the claims)", "")
    doc.add(*(f"- {c}" for c in claims) if claims else ("_Nothing to compare: fewer than two variants with results._",))
    doc.add("")


# --------------------------------------------------------------------------- experiment and plain runs


def _command(argv: list[str], prefix: str = "") -> str:
    return prefix + shlex.join(argv) if argv else "—"


def experiment_section(doc: Doc, exp: Experiment) -> None:
    m = exp.meta
    machine = m.get("machine") or {}
    doc.add(f"## Experiment: {exp.name}", "")
    doc.add(f"- **question**: {m.get('question') or '—'}", f"- **scale**: {m.get('scale') or '—'}",
            f"- **seeds**: {m.get('seeds', '—')}", f"- **notes**: {m.get('notes') or '—'}",
            f"- **created**: {m.get('created') or '—'}", f"- **git commit**: {m.get('git_commit') or '—'}",
            "- **machine**: " + (", ".join(f"{k} {v}" for k, v in machine.items()) if machine else "—"),
            f"- **directory**: `{doc.rel(exp.path)}`", "", "Command:", "", "```", _command(m.get("command") or []), "```", "")
    counts = Counter(s.status for s in exp.steps)
    doc.add(f"Steps: {len(exp.steps)} — " + ", ".join(f"{n} {status}" for status, n in counts.most_common()), "")
    not_done = [s for s in exp.steps if s.status != "done"]
    if not_done:
        doc.add("Steps not done:", "", md_table(
            ["step", "kind", "variant", "seed", "status", "exit code", "output"],
            [[s.id, s.kind, s.variant, "—" if s.seed is None else str(s.seed), s.status, "—" if s.returncode is None else str(s.returncode),
              f"`{s.out}`" + ("" if s.result is not None else " (none)")] for s in not_done]), "")
    for s in not_done:
        if s.status == "failed" and (tail := _last_line(s, exp.path)):
            doc.add(f"- {s.id} failed; last line of its log `{s.log}`: `{tail}`")
    if stale := stale_inputs(exp.steps):
        doc.add("Provenance warnings (a step read another step's output in a version that is no longer its "
                "output, e.g. after that step was re-run):", "", *(f"- {w}" for w in stale), "")
    doc.add("")
    group_sections(doc, exp.steps, exp.name)
    evidence.verdicts(doc, exp.name, exp.steps)
    doc.add("<details><summary>Step commands, wall times and provenance</summary>", "", md_table(
        ["step", "status", "wall time (all attempts)", "attempts", "commit", "command"],
        [[s.id, s.status, f"{s.wall_time_s:.0f} s" if s.wall_time_s is not None else "—", str(s.attempts or "—"),
          _commit(s), f"`{_command(s.command, 'atcrl ')}`" if s.command else "—"] for s in exp.steps]), "",
        "Commit: of the attempt that made the step's output (a resumed attempt keeps it); +dirty: uncommitted "
        "changes were present. The full record (machine, every attempt, input hashes) is the experiment.json.", "",
        "</details>", "")


def stale_inputs(steps: list[Step]) -> list[str]:
    """Steps whose recorded input hash differs from the output hash its producing step recorded."""
    made = {s.out: s for s in steps if s.output_hash is not None}
    return [f"{s.id} read `{path}` at {seen.removeprefix('sha256:')[:12]}, but {made[path].id} now records "
            f"{made[path].output_hash.removeprefix('sha256:')[:12]}"
            for s in steps for path, seen in s.inputs.items()
            if path in made and seen is not None and seen != made[path].output_hash]


def _commit(step: Step) -> str:
    if step.git_commit is None:
        return "—"
    return step.git_commit[:10] + ("+dirty" if step.git_dirty else "")


def _last_line(step: Step, exp_dir: Path, limit: int = 300) -> str | None:
    """The last non-empty line of a failed step's log (usually the error), shortened: from the record's log tail,
    else from the log file; None when neither is there."""
    text = step.log_tail
    if text is None and step.log:
        try:
            text = (exp_dir / step.log).read_text(errors="replace")
        except OSError:
            return None
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return (lines[-1][:limit].replace("`", "'") + ("…" if len(lines[-1]) > limit else "")) if lines else None


def plain_steps(runs: list[Result]) -> list[Step]:
    """Runs given directly as steps of one pseudo-experiment: train runs grouped by env, variant = preset."""
    steps = []
    for run in runs:
        if isinstance(run, TrainRun):
            steps.append(Step(id=run.path.name, kind="train", group="train runs", variant=run.preset, seed=run.seed,
                              env=run.env, status="done" if run.finished else "partial", command=[],
                              out=str(run.path), result=run))
        elif isinstance(run, PretrainRun):
            steps.append(Step(id=run.path.name, kind="pretrain", group="pretrain runs",
                              variant=run.objective or run.path.name, seed=None, env=None,
                              status="done" if run.exported else "partial", command=[], out=str(run.path),
                              result=run))
        elif isinstance(run, ProbeRun):
            steps.append(Step(id=run.path.name, kind="probe", group="probes", variant=run.path.stem, seed=None,
                              env=None, status="done", command=[], out=str(run.path), result=run))
    return steps


def runs_section(doc: Doc, runs: list[Result]) -> None:
    doc.add("## Runs given directly", "", md_table(
        ["run", "kind", "what", "last step", "status"],
        [[f"`{s.out}`", s.kind, f"{s.variant} {s.env or ''}".strip(), _last(s.result), s.status]
         for s in plain_steps(runs)]), "")
    group_sections(doc, plain_steps(runs), "")


def _last(run: Result | None) -> str:
    if isinstance(run, TrainRun):
        return f"agent {run.last_step} (env {fmt_steps(run.last_step * run.action_repeat)})"
    if isinstance(run, PretrainRun):
        return f"update {run.last_update}"
    return "—"


def header(doc: Doc, inputs: list[Path], problems: list[str]) -> None:
    doc.add("# atcrl report", "", "Built by `atcrl report` from (paths relative to this report): "
            + ", ".join(f"`{doc.rel(p)}`" for p in inputs), "")
    doc.add("Env steps = agent steps × action repeat (the paper's x-axis). Means are over seeds; std is the sample "
            f"std (n − 1). Published figures appear only at our runs' env-step budget, {SOURCE}.", "")
    if problems:
        doc.add("## Problems reading the inputs", "", *(f"- {_relative(doc, p, inputs)}" for p in problems), "")


def _relative(doc: Doc, problem: str, inputs: list[Path]) -> str:
    """A problem message with the input paths it names relative to the report (as the header shows them)."""
    for path in sorted(inputs, key=lambda p: -len(str(p))):
        problem = problem.replace(str(path), doc.rel(path))
    return problem
