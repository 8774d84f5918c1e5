"""`atcrl bench`: what this machine can do, and what the fast path gets out of it (docs/performance.md).

cli (BenchConfig, run_bench: the sections, bench.json + bench.md) · compute (matmul roofline, encoder
training, FLOP counts) · ul (ATC throughput and accuracy) · data (replay memory, env steps/s) ·
replay_sampling (the replay's own sampling benchmark) · agents (SAC and PPO + ATC steps/s through the
loops' API) · scaling (batch, env and DDP-process curves) · timing (repetitions, fresh processes) ·
report (derived figures, markdown) · plots (PNG).
"""
