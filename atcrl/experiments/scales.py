"""Run sizes shared by the experiments, per scale.

full      the paper's settings: every flag left at the command's paper default.
cpu-small one DMC task (cartpole-swingup, the fastest to learn: action repeat 8), short runs, batch
          128 instead of 256 (about twice the updates per second), evaluation every 500 agent steps
          with 5 episodes instead of every 1000 with 10, and fast DMC rendering (no shadows,
          reflections or multisampling: the warm-up and evaluations run about 4x faster; pixels differ
          from the paper's, consistently across all runs and datasets of a scale).
gpu       one GPU shared by all of an experiment's runs (`--device cuda --jobs GPU_JOBS`), for online and
          ul-benchmark only (GPU_EXPERIMENTS). The paper's settings where they fit: cartpole-swingup at its
          reference length (47,500 agent steps with the 1e4 warm-up), batch 256, evaluation every 1000 agent
          steps with 10 episodes, default rendering, 84 px; a 50k-agent-step expert (the reference's) with
          400 + 40 episodes; the DMC pretraining preset (1e4 updates at the paper batches). The named
          reductions are in GPU_REDUCTIONS. Sized for about ten minutes of one GPU per experiment with the
          fast path: online's 8 runs are 380k agent steps, about 6-7 min at the fast path's target of 1000
          agent steps/s for 8 runs sharing a GPU (docs/performance.md; a target, not measured).
          `atcrl experiment --list` prints what the one GPU measurement gives (before the fast path: about
          21 min for online) and "not measured" for everything else.
tiny      a smoke test of seconds on tiny:point at 32 px with small networks; for tests only.
"""

from __future__ import annotations

from atcrl.experiments.commands import Pretrain, SACRun
from atcrl.experiments.offline import Demos
from atcrl.experiments.spec import PlanError, Scale

TASK: dict[Scale, str] = {"full": "dmc:cartpole-swingup", "cpu-small": "dmc:cartpole-swingup",
                          "gpu": "dmc:cartpole-swingup", "tiny": "tiny:point"}
"""The single-task experiments' DMC task (tiny: its stand-in)."""

IMAGE_SIZE: dict[Scale, int] = {"full": 84, "cpu-small": 84, "gpu": 84, "tiny": 32}
FAST_RENDER: dict[Scale, bool] = {"full": False, "cpu-small": True, "gpu": False, "tiny": True}

GPU_JOBS = 8
"""Runs sharing the one GPU at the gpu scale (`--jobs 8`): online's 2 variants x 4 seeds at once."""
GPU_EXPERIMENTS = ("online", "ul-benchmark")
"""The experiments that have a gpu scale; the others refuse it (PlanError)."""
GPU_REDUCTIONS: dict[str, tuple[str, ...]] = {
    "online": ("DMC only: no Atari PPO (25M frames per run does not fit; PPO has no GPU measurement)",
               "cartpole-swingup only, of the reference's five DMC tasks (the shortest run: 47,500 agent steps)",
               "the two variants decoupled ATC and end-to-end, 4 seeds each"),
    "ul-benchmark": ("DMC only: no Atari half (PPO expert and frozen PPO of 10M steps do not fit)",
                     "1 seed by default (the reference runs several)"),
}
"""The gpu scale's departures from the paper, per experiment (also in its notes)."""
GPU_KEPT: dict[str, str] = {
    "online": "cartpole-swingup at the reference length (47,500 agent steps with the 1e4 warm-up), batch 256, "
              "evaluation every 1000 steps with 10 episodes, default rendering at 84 px",
    "ul-benchmark": "a RAD-SAC expert on cartpole-swingup for the reference's 50k agent steps; 400 of its episodes "
                    "(50k steps) for pretraining and 40 more for the probe; every DMC objective (VAE at Δ 0, 1, 3) "
                    "for 1e4 updates at its paper batch (DMC preset); frozen SAC and the end-to-end reference at the "
                    "reference length (47,500 agent steps, batch 256, evaluation every 1000 steps with 10 episodes), "
                    "default rendering at 84 px",
}
"""What the gpu scale keeps of the paper, per experiment."""


def check_scale(name: str, scale: Scale) -> None:
    """PlanError unless experiment ``name`` has ``scale``."""
    if scale == "gpu" and name not in GPU_EXPERIMENTS:
        raise PlanError(f"experiment {name} has no gpu scale (only {', '.join(GPU_EXPERIMENTS)} do); "
                        "use --scale full with --device cuda, or --scale cpu-small")


def gpu_notes(name: str) -> str:
    """The gpu scale's notes of an experiment: what it keeps of the paper and its named reductions."""
    return (f"Sized for one GPU shared by all runs (--device cuda --jobs {GPU_JOBS}). The paper's settings: "
            f"{GPU_KEPT[name]}. Named reductions: " + "; ".join(GPU_REDUCTIONS[name]) + ". GPU times: see "
            "`atcrl experiment --list` (one measurement, the rest not measured).")

TINY_SAC_FLAGS = ("--sac.image-size", "32", "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8",
                  "--sac.replay-capacity", "1000", "--sac.log-every", "50", "--no-tensorboard")

RL: dict[Scale, SACRun] = {
    "full": SACRun(None),
    "cpu-small": SACRun(4_000, warmup=1_000, batch_size=128, eval_every=500, eval_episodes=5, fast_render=True,
                        ckpt_every=1_000),
    "gpu": SACRun(None),
    "tiny": SACRun(200, warmup=100, batch_size=32, eval_every=100, eval_episodes=1, fast_render=True,
                   extra=TINY_SAC_FLAGS),
}
"""Every SAC run that is compared (online, frozen, end-to-end references): one size per scale, so
curves of different experiments at one scale line up."""

DEMOS: dict[Scale, Demos] = {
    # 400 cartpole episodes = 50k agent steps, the size of the paper's expert replay.
    "full": Demos(SACRun(None), episodes=400, probe_episodes=40),
    # A small expert (3000 agent steps, about a third of the way to solving the task) still acts far
    # from randomly; 30 episodes = 3750 frames.
    "cpu-small": Demos(SACRun(3_000, warmup=1_000, batch_size=128, eval_every=1_000, eval_episodes=3,
                              fast_render=True, ckpt_every=1_000),
                       episodes=30, probe_episodes=12),
    # The reference's expert: 50k agent steps from a fresh start (full runs the task's 47.5k run length).
    "gpu": Demos(SACRun(50_000), episodes=400, probe_episodes=40),
    "tiny": Demos(None, episodes=6, probe_episodes=4),
}

PRETRAIN: dict[Scale, Pretrain] = {
    "full": Pretrain(),
    # CPC, ST-DIM and VAE run 1-2 updates/s here even at half batch, so 1000 updates, not 1e4.
    "cpu-small": Pretrain(updates=1_000, batch_fraction=0.5, eval_every=250),
    "gpu": Pretrain(),
    "tiny": Pretrain(updates=20, batch_fraction=0.125, eval_every=10, extra=("--no-tensorboard",)),
}
"""Offline UL pretraining on demonstrations (full: the DMC preset, 1e4 updates of batch 256; cpu-small:
1000 updates, every objective at half its paper batch, e.g. ATC 128, CPC 8 sequences of 32)."""

DEFAULT_SEEDS: dict[Scale, int] = {"full": 3, "cpu-small": 1, "gpu": 1, "tiny": 1}
