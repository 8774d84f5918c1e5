"""Markdown tables of the aggregated cells; published figures only in their own table, at our budget."""

from __future__ import annotations

from collections.abc import Sequence

from atcrl.report.anchors import SOURCE, at_budget, format_anchor
from atcrl.report.runs import ProbedTask, ProbeRun, TargetR2
from atcrl.report.stats import TrainCell, ValueCell, fmt_range, fmt_stat, fmt_steps

PRETRAIN_COLUMNS = ("val/accuracy", "val/loss", "ul/accuracy", "ul/loss")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _hours(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.0f} s"
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def train_table(cells: Sequence[TrainCell], final: str = "final eval return") -> str:
    """env × variant: final return over seeds (``final`` names it), the env steps it was reached at, speed."""
    headers = ["env", "variant", "seeds", f"{final} (mean ± std)", "at env steps (ours)", "agent steps/s overall",
               "steps/s last logged", "wall time / seed"]
    rows = []
    for c in cells:
        row = [c.env, c.variant, c.seeds_text, fmt_stat(c.final, 1, n=False), fmt_range(c.final_env_steps)]
        row += [fmt_stat(c.steps_per_s, 2, n=False), fmt_stat(c.last_rate, 2, n=False),
                _hours(c.wall_time_s.mean) if c.wall_time_s else "—"]
        rows.append(row)
    return md_table(headers, rows)


def budget(cells: Sequence[TrainCell], env: str) -> int | None:
    """The env-step budget every run of ``env`` reached at its last evaluation, or None if they differ."""
    steps = {n for c in cells if c.env == env for n in c.final_env_steps}
    return steps.pop() if len(steps) == 1 else None


def quoted_table(cells: Sequence[TrainCell]) -> str | None:
    """Published final returns at exactly our runs' env-step budget (None: none at that budget)."""
    rows = [[a.method, env, fmt_steps(a.env_steps), format_anchor(a)]
            for env in dict.fromkeys(c.env for c in cells) if (n := budget(cells, env)) is not None
            for a in at_budget(env, n)]
    if not rows:
        return None
    return (md_table(["quoted method", "env", "env steps", "final return (quoted, not our runs)"], rows)
            + f"\n\nQuoted figures, {SOURCE}.")


def _env_column(cells: Sequence[ValueCell]) -> bool:
    return len({c.env for c in cells}) > 1


def probe_table(cells: Sequence[ValueCell]) -> str:
    tasks = sorted({k[5:] for c in cells for k in c.values if k.startswith("task:")})
    env = _env_column(cells)
    headers = ["env"] * env + ["variant", "seeds", "mean R² (mean ± std)"]
    headers += [f"R² {t}" for t in tasks] if len(tasks) > 1 else []
    rows = []
    for c in cells:
        row = [str(c.env)] * env + [c.variant, c.seeds_text("mean_r2"), fmt_stat(c.values.get("mean_r2"), 3, n=False)]
        if len(tasks) > 1:
            row += [fmt_stat(c.values.get(f"task:{t}"), 3, n=False) for t in tasks]
        rows.append(row)
    return md_table(headers, rows)


def _r2_ci(t: TargetR2 | None) -> str:
    if t is None:
        return "—"
    return f"{t.r2:.3f}" + (f" [{t.ci[0]:.3f}, {t.ci[1]:.3f}]" if t.ci else " (no interval)")


def probe_target_table(probes: Sequence[tuple[str, int | None, ProbeRun]], baseline_variant: str = "random") -> str | None:
    """Per (variant, seed, task, target): R² with its 95% bootstrap interval over the test episodes, beside the
    random-encoder baseline (the result's own --baseline, else the ``baseline_variant`` probe of the same seed),
    and how many test episodes it was scored on; None when no result holds per-target R²."""
    by_seed = {seed: run for variant, seed, run in probes if variant == baseline_variant}
    rows = []
    for variant, seed, run in probes:
        fallback = by_seed.get(seed) if variant != baseline_variant else None
        for task, probed in run.per_task.items():
            base: ProbedTask | None = run.baseline.get(task) or (fallback.per_task.get(task) if fallback else None)
            named = {t.name: t for t in base.targets} if base else {}
            episodes = "—" if probed.test_episodes is None else str(probed.test_episodes)
            rows += [[variant, "—" if seed is None else str(seed), task, t.name, _r2_ci(t), _r2_ci(named.get(t.name)),
                      episodes] for t in probed.targets]
    if not rows:
        return None
    return md_table(["variant", "seed", "task", "target", "R² [95% interval]", "random-encoder R² [95% interval]",
                     "test episodes"], rows)


def pretrain_table(cells: Sequence[ValueCell]) -> str:
    env = _env_column(cells)
    headers = ["env"] * env + ["variant", "seeds", "val accuracy", "val loss", "train accuracy", "train loss",
                               "at update"]
    rows = [[str(c.env)] * env + [c.variant, c.seeds_text("val/loss"),
                                  *(fmt_stat(c.values.get(k), 3, n=False) for k in PRETRAIN_COLUMNS),
                                  c.extra.get("updates", "—")] for c in cells]
    return md_table(headers, rows)


def _match(cells: Sequence[ValueCell], env: str, variant: str) -> ValueCell | None:
    """The cell of ``variant`` on ``env``, else one of ``variant`` that names no env."""
    same = [c for c in cells if c.variant == variant and c.env in (env, None)]
    return next((c for c in same if c.env == env), same[0] if same else None)


def join_table(train: Sequence[TrainCell], probes: Sequence[ValueCell], pretrained: Sequence[ValueCell]) -> str | None:
    """Per (env, variant) of a train group: final return beside the probe R² and the pretraining val accuracy of
    the same variant on the same env; None when no variant has a return and one of the other two."""
    rows, joined = [], False
    for c in train:
        probe, pre = _match(probes, c.env, c.variant), _match(pretrained, c.env, c.variant)
        r2 = probe.values.get("mean_r2") if probe else None
        acc = pre.values.get("val/accuracy") if pre else None
        joined |= c.final is not None and (r2 is not None or acc is not None)
        rows.append([c.env, c.variant, fmt_stat(c.final, 1), fmt_stat(r2, 3), fmt_stat(acc, 3)])
    if not joined:
        return None
    return md_table(["env", "variant", "final eval return", "probe mean R²", "pretrain val accuracy"], rows)
