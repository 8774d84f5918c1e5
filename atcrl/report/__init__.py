"""`atcrl report`: read experiment and run directories, aggregate over seeds, write report.md with PNGs.

runs (one run's files) · load (experiments, what the paths hold) · data (the small data/ folder a
published report is rebuilt from) · stats (over seeds: mean ± std, curves, what is missing) ·
intervals (rliable: IQM, mean, difference, probability of improvement with stratified bootstrap CIs,
performance profiles) · verdicts (a claim decided from the data) · claims (the paper's claims per
experiment) · evidence (statistics and verdict sections) · tables (markdown) · plots (PNG) ·
anchors (published figures, quoted only at our budget) · document (report.md sections) · cli
(ReportConfig, run_report).
"""
