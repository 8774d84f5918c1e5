"""``atcrl report``: markdown tables and PNG plots from experiment directories and run directories.

    atcrl report experiments/out/ul-benchmark --out reports/ul-benchmark
    atcrl report runs/dmc-atc-0 runs/dmc-rad-0 --out reports/cartpole
    atcrl report runs/experiments/online-cpu-small --out docs/results/online-cpu-small --save-data
    atcrl report docs/results/online-cpu-small/data --out docs/results/online-cpu-small   # the same report

A path may be an experiment directory (experiment.json), a train or pretrain run directory
(config.json), a probe result (.json), or a directory whose children are any of these.
Unreadable files are listed in the report and on stderr; the rest is still reported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import tyro

from atcrl.atomic import atomic_write
from atcrl.report.data import save_data
from atcrl.report.document import Doc, experiment_section, header, runs_section
from atcrl.report.load import Inputs, ReportInputError, load_inputs
from atcrl.report.stats import Spread

REPORT_NAME = "report.md"
DATA_DIR = "data"


@dataclass(frozen=True)
class ReportConfig:
    """Tables and plots from experiment and run directories, with the paper's anchor numbers beside ours."""

    inputs: tyro.conf.Positional[tuple[str, ...]]
    """Experiment directories, run directories, probe .json files, or directories holding them."""
    out: str = "report"
    """Directory for report.md and its PNG figures (created; an existing report.md is replaced)."""
    spread: Spread = "minmax"
    """Shaded band of the learning curves: min–max over seeds, or mean ± sample std."""
    save_data: bool = False
    """Copy the one experiment given into OUT/data (its record and the numbers the report reads: kilobytes, see
    atcrl/report/data.py) and build the report from that copy, so `atcrl report OUT/data --out OUT` rebuilds it."""


def build_report(inputs: Inputs, cfg: ReportConfig, problems: list[str]) -> Doc:
    doc = Doc(Path(cfg.out), cfg.spread)
    header(doc, [Path(p) for p in cfg.inputs], problems)
    for exp in inputs.experiments:
        experiment_section(doc, exp)
    if inputs.runs:
        runs_section(doc, inputs.runs)
    return doc


def _from_saved_data(cfg: ReportConfig, inputs: Inputs, problems: list[str]) -> tuple[ReportConfig, Inputs]:
    """--save-data: write OUT/data from the one experiment given, and read the report's inputs back from it."""
    if len(inputs.experiments) != 1 or inputs.runs:
        raise ReportInputError(f"--save-data takes one experiment directory; got {len(inputs.experiments)} "
                               f"experiment(s) and {len(inputs.runs)} run(s)")
    data = Path(cfg.out) / DATA_DIR
    if data.resolve() == inputs.experiments[0].path.resolve():
        raise ReportInputError(f"{data} is the experiment itself; without --save-data this rebuilds the report from it")
    written = save_data(inputs.experiments[0].path, data, problems)
    print(f"wrote {data}: the record and {written} step output(s)")
    for p in problems:  # the report shows the copy's problems (what the copy lost is named here)
        print(f"atcrl report: warning: {p}", file=sys.stderr)
    problems.clear()
    return replace(cfg, inputs=(str(data),)), load_inputs([data], problems)


def run_report(cfg: ReportConfig) -> int:
    """0 when report.md was written, 2 on bad input (nothing to report; the message says why)."""
    problems: list[str] = []
    try:
        if not cfg.inputs:
            raise ReportInputError("give at least one experiment or run directory")
        inputs = load_inputs([Path(p) for p in cfg.inputs], problems)
        if cfg.save_data:
            cfg, inputs = _from_saved_data(cfg, inputs, problems)
    except ReportInputError as e:
        print(f"atcrl report: error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"atcrl report: warning: {p}", file=sys.stderr)
    if inputs.empty():
        print("atcrl report: error: no run could be read (see the warnings above)", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = build_report(inputs, cfg, problems)
    text = "\n".join(doc.lines).rstrip() + "\n"
    atomic_write(out / REPORT_NAME, lambda f: f.write(text.encode()), mode=0o644)  # readable like the PNGs
    n_exp, n_runs = len(inputs.experiments), len(inputs.runs)
    print(f"wrote {out / REPORT_NAME}: {n_exp} experiment(s), {n_runs} run(s) given directly, "
          f"{len(doc.figures)} figure(s), {len(problems)} problem(s)")
    for fig in doc.figures:
        print(f"  {fig}")
    return 0
