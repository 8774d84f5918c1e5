"""PNG plots of `atcrl bench` results, drawn from the report dict (so from any saved bench.json too).

    atcrl bench --plot-only bench/out      # redraw from bench/out/bench.json, measuring nothing

Figures are drawn on matplotlib's Agg canvas without pyplot: no display, no global figure state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VARIANT_STYLE: dict[str, dict[str, Any]] = {
    "fp32 eager": {"color": "tab:gray", "marker": "o"},
    "fast path": {"color": "tab:blue", "marker": "s"},
}
PLOT_FILES = ("scaling_throughput.png", "scaling_envs.png", "scaling_ddp.png")
"""What the scaling section draws, next to bench.json."""


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Draw every plot the report has data for into ``out``; returns the files written.

    ``report`` must have been through ``report.derive`` (roofline fractions, ratios).
    """
    scaling = report.get("sections", {}).get("scaling", {})
    if not scaling or "error" in scaling:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, draw in zip(PLOT_FILES, (_throughput, _envs, _ddp), strict=True):
        figure = draw(scaling)
        if figure is not None:
            figure.savefig(out / name, dpi=110)
            drawn.append(out / name)
    return drawn


def replot(directory: Path) -> list[Path]:
    """Redraw the plots of ``directory/bench.json`` into ``directory`` (derived figures recomputed)."""
    from atcrl.bench.report import derive

    path = Path(directory) / "bench.json"
    if not path.is_file():
        raise FileNotFoundError(f"no bench.json in {directory}: run `atcrl bench --out {directory}` first")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-run `atcrl bench --out {directory}`") from e
    if not isinstance(report, dict) or not isinstance(report.get("sections"), dict):
        raise ValueError(  # noqa: TRY004 -- bad file content, reported like the JSON error above
            f"{path} is not an `atcrl bench` report (no 'sections' object)")
    derive(report)
    return plot_report(report, Path(directory))


# --------------------------------------------------------------------------- figures


def _figure(rows: int, cols: int, width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def _log2_x(ax: Any, ticks: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(ticks))))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, alpha=0.3)


def _curves(ax: Any, rows: list[dict[str, Any]], x: str, y: str, what: str, **style: Any) -> None:
    """One line per variant: ``rows[y]`` against ``rows[x]``, labelled "<variant>, <what>"."""
    for variant, base in VARIANT_STYLE.items():
        points = sorted((r[x], r[y]) for r in rows if r.get("variant") == variant and r.get(y) is not None)
        if points:
            ax.plot(*zip(*points, strict=True), **{**base, **style}, label=f"{variant}, {what}")


def _throughput(r: dict[str, Any]) -> Any:
    panels = [(f"{name} encoder {'x'.join(map(str, shape))}: training",
               [x for x in r.get("encoder", []) if x["arch"] == arch], "per_s", "per_cpu_s", "images/s")
              for arch, name, shape in (("dmc", "DMC", (9, 84, 84)), ("atari", "Atari", (4, 84, 84)))]
    panels.append(("ATC pretraining, DMC preset", r.get("atc", []), "images_per_s", "images_per_cpu_s",
                   "images/s (2 x batch x updates/s)"))
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    figure, axes = _figure(2, len(panels), 4.6 * len(panels), 7.0)
    for col, (title, rows, key, cpu_key, ylabel) in enumerate(panels):
        top, bottom = axes[0][col], axes[1][col]
        _curves(top, rows, "batch", key, "best wall clock")
        _curves(top, rows, "batch", cpu_key, "per CPU second", linestyle=":", alpha=0.7)
        top.set(title=title, ylabel=ylabel)
        top.set_ylim(bottom=0)
        for fraction, line in (("fp32", "-"), ("bf16", "--")):
            for variant, base in VARIANT_STYLE.items():
                pts = sorted((x["batch"], 100 * x[f"{fraction}_roofline_fraction"]) for x in rows
                             if x["variant"] == variant and x.get(f"{fraction}_roofline_fraction") is not None)
                if pts:
                    bottom.plot(*zip(*pts, strict=True), **base, linestyle=line, label=f"{variant}, % {fraction}")
        bottom.set(xlabel="batch size", ylabel="% of matmul roofline")
        bottom.set_ylim(bottom=0)
        for ax in (top, bottom):
            _log2_x(ax, [x["batch"] for x in rows])
            ax.legend(fontsize=7)
    roof = r.get("roofline", {})
    if "fp32" in roof and "bf16" in roof:
        figure.suptitle(f"Throughput vs batch size ({r.get('threads', '?')} thread(s)); roofline fp32 "
                        f"{roof['fp32']['gflops']:.0f}, bf16 {roof['bf16']['gflops']:.0f} GFLOP/s")
    return figure


def _envs(r: dict[str, Any]) -> Any:
    vector = [x for x in r.get("envs", []) if x["vector"]]
    if not vector:
        return None
    figure, axes = _figure(1, 1, 6.4, 4.4)
    ax = axes[0][0]
    for spec in dict.fromkeys(x["spec"] for x in vector):
        pts = sorted((x["num_envs"], x["env_steps_per_s"], x["agent_steps_per_s"]) for x in vector if x["spec"] == spec)
        n, env_rate, agent_rate = zip(*pts, strict=True)
        ax.plot(n, env_rate, marker="o", color="tab:blue", label=f"{spec} vector env: env steps/s")
        ax.plot(n, agent_rate, marker="s", color="tab:orange", label=f"{spec} vector env: agent steps/s")
    for x in r["envs"]:
        if not x["vector"]:
            ax.axhline(x["env_steps_per_s"], color="tab:green", linestyle="--",
                       label=f"{x['spec']}{' fast render' if x['fast_render'] else ''}, 1 env: env steps/s")
    _log2_x(ax, [x["num_envs"] for x in vector])
    ax.set(xlabel="number of envs", ylabel="steps/s (summed over envs)", title="Env steps/s vs number of envs")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return figure


def _ddp(r: dict[str, Any]) -> Any:
    rows = r.get("ddp", [])
    if not rows:
        return None
    figure, axes = _figure(1, 1, 6.4, 4.4)
    ax = axes[0][0]
    variants = list(dict.fromkeys(x["variant"] for x in rows))
    processes = sorted({x["processes"] for x in rows})
    width = 0.8 / len(processes)
    for j, n in enumerate(processes):
        for i, variant in enumerate(variants):
            row = next((x for x in rows if x["variant"] == variant and x["processes"] == n), None)
            if row is None:
                continue
            bar = ax.bar(i + (j - (len(processes) - 1) / 2) * width, row["updates_per_s"], width,
                         color=f"C{j}", label=f"{n} process(es)" if i == 0 else None)
            note = f"{row['images_per_s']:.0f} img/s"
            if row.get("speedup") is not None and n != processes[0]:
                note += f"\n{row['speedup']:.2f}x"
            ax.bar_label(bar, [note], fontsize=7)
    ax.set_xticks(range(len(variants)), variants)
    first = rows[0]
    ax.set(ylabel="updates/s", title=f"Offline ATC pretraining, global batch {first['global_batch']}, "
                                     f"{first['threads_per_process']} thread(s)/process")
    ax.margins(y=0.2)
    ax.legend(fontsize=8)
    return figure
