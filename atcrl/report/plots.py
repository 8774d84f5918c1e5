"""PNG figures for the report, drawn on matplotlib Figures without pyplot: no display, no global figure state."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from atcrl.report.anchors import Anchor
from atcrl.report.stats import Curve, Stat, fmt_steps

ANCHOR_MARKERS = {"CURL": "s", "DrQ": "^"}
ANCHOR_COLORS = {"CURL": "black", "DrQ": "dimgray"}


def _colors(names: list[str]) -> dict[str, tuple]:
    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def learning_curves(path: Path, panels: Mapping[str, Mapping[str, Curve]], anchors: Mapping[str, list[Anchor]],
                    spread_label: str, title: str, ylabel: str = "eval return") -> Path:
    """One panel per env, one line per variant; dashed where fewer seeds than the variant's most reached.

    Anchor points are drawn only when our curves reach at least half their budget, so a short run's
    x-axis is not stretched to 500k.
    """
    envs = list(panels)
    variants = sorted({v for curves in panels.values() for v in curves})
    colors = _colors(variants)
    cols = min(3, len(envs))
    rows = -(-len(envs) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, env in zip(axes.flat, envs, strict=False):
        xmax = 0
        for variant, c in panels[env].items():
            color = colors[variant]
            full = c.n == c.n.max()
            ax.plot(c.x, np.where(full, c.mean, np.nan), color=color, label=f"{variant} (n={c.n.max()})")
            if not full.all():  # the tail some seeds have not reached: dashed, so it reads as partial
                start = max(int(np.argmin(full)) - 1, 0)
                ax.plot(c.x[start:], c.mean[start:], color=color, linestyle="--")
            ax.fill_between(c.x, c.lo, c.hi, color=color, alpha=0.2, linewidth=0)
            xmax = max(xmax, int(c.x.max()))
        for i, a in enumerate(anchors.get(env, [])):
            if xmax >= a.env_steps / 2:
                nudge = 1 + 0.015 * (i % 2 * 2 - 1)  # CURL and DrQ share an x: set them slightly apart
                ax.errorbar([a.env_steps * nudge], [a.mean], yerr=None if a.std is None else [[a.std], [a.std]],
                            marker=ANCHOR_MARKERS.get(a.method, "o"), color=ANCHOR_COLORS.get(a.method, "black"), capsize=3, linestyle="none",
                            label=f"{a.method} @ {fmt_steps(a.env_steps)}")
        ax.set_title(env)
        ax.set_xlabel("env steps (agent steps × action repeat)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_steps(x)))
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    for ax in list(axes.flat)[len(envs):]:
        ax.axis("off")
    fig.suptitle(f"{title}\n{spread_label}; dashed: not all seeds", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def bars(path: Path, series: Mapping[str, Mapping[str, Stat | None]], title: str) -> Path:
    """One panel per series (e.g. "val accuracy", "val loss"), one bar per variant: mean with ±std error bars."""
    fig = Figure(figsize=(max(4.0, 0.7 * _width(series)) * len(series), 3.8))
    axes = fig.subplots(1, len(series), squeeze=False)
    for ax, (ylabel, stats) in zip(axes.flat, series.items(), strict=True):
        names = list(stats)
        colors = _colors(names)
        means = [s.mean if s else np.nan for s in stats.values()]
        errs = [s.std if s and s.std is not None else 0.0 for s in stats.values()]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3, color=[colors[n] for n in names])
        for i, s in enumerate(stats.values()):
            label = f"n={s.n}" if s else "no data"
            ax.annotate(label, (i, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}\nbars: mean over seeds, error bars: ±std", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def profiles(path: Path, taus: np.ndarray, curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
             metric: str, title: str) -> Path:
    """Performance profiles: per variant, the fraction of runs × tasks scoring above τ, with its 95% CI band."""
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    colors = _colors(list(curves))
    for variant, (fraction, lo, hi) in curves.items():
        ax.plot(taus, fraction, color=colors[variant], label=variant)
        ax.fill_between(taus, lo, hi, color=colors[variant], alpha=0.2, linewidth=0)
    ax.set_xlabel(f"{metric} τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{title}\nshaded: 95% stratified bootstrap CI", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _width(series: Mapping[str, Mapping[str, object]]) -> int:
    return max(len(s) for s in series.values()) + 2


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
