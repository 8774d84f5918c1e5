"""`atcrl train`: online RL from pixels with a paper preset, typed overrides, checkpoints and resume.

    atcrl train                                          # decoupled ATC-SAC on dmc:cartpole-swingup
    atcrl train --preset dmc-rad --env dmc:walker-walk --steps 100000 --sac.batch-size 128
    atcrl train --preset dmc-frozen --encoder runs/pretrain/encoder.safetensors
    atcrl train --env atari:Breakout --ppo.agent.lr 1e-4   # discrete actions -> PPO (atari-ppo-atc)
    atcrl train --resume runs/dmc-atc-dmc-cartpole-swingup-0
    atcrl train --resume runs/dmc-atc-dmc-cartpole-swingup-0 --allow-change sac.agent.q_lr=5e-4

How flags, presets and a resumed run's recorded settings combine: atcrl.train.train_plan.
"""

from __future__ import annotations

import sys

from atcrl.checkpoint import CheckpointError, prepare_run_dir
from atcrl.train.rl_checkpoint import TrainRunError
from atcrl.train.train_plan import TrainConfig, TrainError, check_encoder, default_out, resolve, resume_plan
from atcrl.train.train_session import Diverged, start_session, train_session


def run_train(cfg: TrainConfig) -> int:  # type: ignore[valid-type]
    """``atcrl train``: 0 when the run finished, 2 on bad input, 3 when a loss became NaN/inf."""
    from atcrl.data.dataset import DatasetError

    try:
        resumed = None
        if cfg.resume:
            resumed = resume_plan(cfg)
            run_dir, cfg, plan = resumed.run_dir, resumed.cfg, resumed.plan
        else:
            plan = resolve(cfg)
            if plan.loop.encoder_path:
                check_encoder(plan)
            run_dir = prepare_run_dir(cfg.out or default_out(plan), resume=False, create=False)
        if cfg.video_every:
            from atcrl.train.evaluate import check_video_format

            check_video_format("." + cfg.video_format)
        session = start_session(cfg, plan, run_dir, resumed)
    except (TrainError, TrainRunError, CheckpointError, DatasetError, FileExistsError, FileNotFoundError,
            ValueError, ImportError) as e:
        print(f"atcrl train: error: {e}", file=sys.stderr)
        return 2
    try:
        return train_session(session)
    except Diverged as e:
        print(f"atcrl train: stopped: {e}", file=sys.stderr)
        return 3
