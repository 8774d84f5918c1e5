"""`atcrl report`: read experiment and run directories, aggregate over seeds, write report.md with PNGs.

runs (one run's files) · load (experiments, what the paths hold) · stats (over seeds: mean ± std,
curves, what is missing) · tables (markdown) · plots (PNG) · anchors (the paper's numbers) ·
document (report.md sections) · cli (ReportConfig, run_report).
"""
