"""Run sizes shared by the experiments, per scale.

full      the paper's settings: every flag left at the command's paper default.
cpu-small one DMC task (cartpole-swingup, the fastest to learn: action repeat 8), short runs, batch
          128 instead of 256 (about twice the updates per second), evaluation every 500 agent steps
          with 5 episodes instead of every 1000 with 10, and fast DMC rendering (no shadows,
          reflections or multisampling: the warm-up and evaluations run about 4x faster; pixels differ
          from the paper's, consistently across all runs and datasets of a scale).
tiny      a smoke test of seconds on tiny:point at 32 px with small networks; for tests only.
"""

from __future__ import annotations

from atcrl.experiments.commands import Pretrain, SACRun
from atcrl.experiments.offline import Demos
from atcrl.experiments.spec import Scale

TASK: dict[Scale, str] = {"full": "dmc:cartpole-swingup", "cpu-small": "dmc:cartpole-swingup", "tiny": "tiny:point"}
"""The single-task experiments' DMC task (tiny: its stand-in)."""

IMAGE_SIZE: dict[Scale, int] = {"full": 84, "cpu-small": 84, "tiny": 32}
FAST_RENDER: dict[Scale, bool] = {"full": False, "cpu-small": True, "tiny": True}

TINY_SAC_FLAGS = ("--sac.image-size", "32", "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8",
                  "--sac.replay-capacity", "1000", "--sac.log-every", "50", "--no-tensorboard")

RL: dict[Scale, SACRun] = {
    "full": SACRun(None),
    "cpu-small": SACRun(4_000, warmup=1_000, batch_size=128, eval_every=500, eval_episodes=5, fast_render=True,
                        ckpt_every=1_000),
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
    "tiny": Demos(None, episodes=6, probe_episodes=4),
}

PRETRAIN: dict[Scale, Pretrain] = {
    "full": Pretrain(),
    # CPC, ST-DIM and VAE run 1-2 updates/s here even at half batch, so 1000 updates, not 1e4.
    "cpu-small": Pretrain(updates=1_000, batch_fraction=0.5, eval_every=250),
    "tiny": Pretrain(updates=20, batch_fraction=0.125, eval_every=10, extra=("--no-tensorboard",)),
}
"""Offline UL pretraining on demonstrations (full: the DMC preset, 1e4 updates of batch 256; cpu-small:
1000 updates, every objective at half its paper batch, e.g. ATC 128, CPC 8 sequences of 32)."""

DEFAULT_SEEDS: dict[Scale, int] = {"full": 3, "cpu-small": 1, "tiny": 1}
