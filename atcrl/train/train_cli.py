"""`atcrl train`: online RL from pixels with a paper preset, typed overrides, checkpoints and resume.

    atcrl train                                          # decoupled ATC-SAC on dmc:cartpole-swingup
    atcrl train --preset dmc-rad --env dmc:walker-walk --steps 100000 --sac.batch-size 128
    atcrl train --preset dmc-frozen --encoder runs/pretrain/encoder.safetensors
    atcrl train --env atari:Breakout --ppo.agent.lr 1e-4   # discrete actions -> PPO (atari-ppo-atc)
    atcrl train --resume runs/dmc-atc-dmc-cartpole-swingup-0

Resolution, lowest priority first: the agent loop's paper defaults for the env (SAC: the task's
run length, cheetah's batch and lr), the preset's settings, then the flags given. ``--sac.*`` and
``--ppo.*`` expose every field of SACLoopConfig / PPOLoopConfig (``agent`` is the SAC/PPO
hyperparameter block); a flag left out keeps the preset's value.

Resuming reads the run's config.json; flags given with --resume must agree with it (a
disagreement is an error naming each field), except the session settings (device, checkpoint
and video cadence, logging). Flags left at their default are taken from the run.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atcrl.checkpoint import CheckpointError, plain_config, prepare_run_dir
from atcrl.encoder_io import encoder_info
from atcrl.presets import DEFAULT_RL_PRESET, RL_PRESETS, RLPreset, rl_preset
from atcrl.train.overrides import (
    apply_overrides,
    config_from_plain,
    given,
    merge_overrides,
    overrides_of,
    plain_diff,
)
from atcrl.train.ppo_loop import PPOLoopConfig
from atcrl.train.rl_checkpoint import RESUMABLE_CHANGES, TrainRunError, read_run_info
from atcrl.train.sac_loop import SACLoopConfig, paper_config

DEFAULT_ENV = RL_PRESETS[DEFAULT_RL_PRESET[False]].env
# Loop fields TrainConfig sets itself (one flag each, for both agents).
_OWN = ("env", "steps", "seed", "device", "encoder_path", "eval_every", "eval_episodes")
SESSION_FIELDS = ("resume", "out", "device", "ckpt_every", "keep_checkpoints", "checkpoint_replay",
                  "video_every", "video_format", "tensorboard", "stop_after")
"""TrainConfig fields that belong to one process, not to the run: free to change on --resume."""


def _example(name: str) -> Any:
    p = RL_PRESETS[name]
    base = paper_config(p.env) if p.algo == "sac" else PPOLoopConfig(env=p.env)
    return dataclasses.replace(base, **p.settings)


SACOverrides = overrides_of(SACLoopConfig, exclude=_OWN, rename={"sac": "agent"}, example=_example("dmc-atc"),
                            example_name="dmc-atc")
PPOOverrides = overrides_of(PPOLoopConfig, exclude=_OWN, rename={"ppo": "agent"},
                            example=_example("atari-ppo-atc"), example_name="atari-ppo-atc")


@dataclass(frozen=True)
class TrainConfig:
    """Train an RL agent from pixels: SAC for continuous actions, PPO for discrete ones."""

    preset: str | None = None
    """Paper setting: dmc-atc, dmc-rad, dmc-frozen (SAC); atari-ppo-atc, atari-ppo, atari-ppo-rl-atc,
    atari-ppo-atc-init, atari-ppo-frozen (PPO). None = dmc-atc for continuous actions, atari-ppo-atc for discrete."""
    env: str | None = None
    """Env spec (dmc:<domain>-<task>, atari:<Game>, gym:<id>, tiny:<name>); None = the preset's."""
    steps: int | None = None
    """Total agent steps (SAC: including the warm-up); None = the preset's (SAC: the paper's run length)."""
    seed: int = 0
    """Seed of weights, envs, sampling and augmentation."""
    out: str | None = None
    """Run directory; None = runs/<preset>-<env>-<seed>. An existing non-empty one is never overwritten."""
    resume: str | None = None
    """Continue the run in this directory from its latest checkpoint (same settings)."""
    encoder: str | None = None
    """Exported encoder (.safetensors/.json or directory) to start from; required by the frozen presets."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ..."""
    eval_every: int | None = None
    """Agent steps between deterministic evaluations (0 = only at the end); None = SAC 1000 (paper), PPO 0."""
    eval_episodes: int | None = None
    """Episodes per evaluation; None = 10."""
    video_every: int = 0
    """Agent steps between evaluation videos in RUN_DIR/videos (0 = none); SAC records at evaluation steps."""
    video_format: Literal["gif", "mp4"] = "gif"
    """Video container (mp4 needs imageio's ffmpeg plugin)."""
    ckpt_every: int = 5000
    """Agent steps between checkpoints (one is always written at the end)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    checkpoint_replay: bool = False
    """Also checkpoint the replay, so a resumed SAC run continues exactly; without it the replay refills after
    a resume. Large (up to capacity x frame bytes per checkpoint, 2 GB at the paper's DMC sizes): consider
    --keep-checkpoints 1."""
    tensorboard: bool = True
    """Also write TensorBoard event files (metrics.jsonl/csv are always written)."""
    stop_after: int | None = None
    """End this session (with a checkpoint) once this many agent steps are done; --resume continues it."""
    sac: SACOverrides = field(default_factory=SACOverrides)  # type: ignore[valid-type]
    """SAC loop and agent settings (used by the SAC presets)."""
    ppo: PPOOverrides = field(default_factory=PPOOverrides)  # type: ignore[valid-type]
    """PPO loop and agent settings (used by the PPO presets)."""

    def __post_init__(self) -> None:
        for name in ("ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "eval_every", "eval_episodes", "video_every", "stop_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")


class TrainError(ValueError):
    """The run cannot start as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """A TrainConfig resolved against its preset and env."""

    preset: str
    algo: Literal["sac", "ppo"]
    loop: Any
    """SACLoopConfig or PPOLoopConfig, complete."""
    eval_every: int
    eval_episodes: int
    frame_channels: int
    """Channels of one frame of the env (for videos)."""
    obs_shape: tuple[int, int, int]
    """The stacked observation the env will produce [k * C, H, W]."""


def _probe(env: str, image_size: int) -> Any:
    """The env's EnvMeta (made once, never stepped); non-image and unknown envs fail here."""
    from atcrl.envs import env_meta, make_env

    probe = make_env(env, image_size=image_size)
    try:
        return env_meta(probe)
    finally:
        probe.close()


def resolve(cfg: TrainConfig) -> Plan:
    """Preset + env + flags -> Plan; TrainError for combinations that cannot run."""
    name = cfg.preset
    preset: RLPreset | None = rl_preset(name) if name else None
    env = cfg.env if cfg.env is not None else (preset.env if preset else DEFAULT_ENV)  # "" is refused by make_env
    meta = _probe(env, cfg.sac.image_size or cfg.ppo.image_size or 84)
    if preset is None:
        name = DEFAULT_RL_PRESET[meta.discrete]
        preset = RL_PRESETS[name]
    algo = preset.algo
    if meta.discrete != (algo == "ppo"):
        kind, want = ("discrete", "PPO") if meta.discrete else ("continuous", "SAC")
        fits = [k for k, p in RL_PRESETS.items() if (p.algo == "ppo") == meta.discrete]
        raise TrainError(f"preset {name} trains {algo.upper()}, but {env} has {kind} actions, which need {want}: "
                         f"use one of --preset {', '.join(fits)} (or leave --preset out)")
    other = given(cfg.ppo if algo == "sac" else cfg.sac)
    if other:
        prefix = "ppo" if algo == "sac" else "sac"
        raise TrainError(f"--{prefix}.* options ({', '.join(other)}) do not apply: preset {name} trains {algo.upper()}")
    base = paper_config(env) if algo == "sac" else PPOLoopConfig(env=env)
    loop = dataclasses.replace(base, **preset.settings)
    loop = apply_overrides(loop, cfg.sac if algo == "sac" else cfg.ppo)
    eval_every = cfg.eval_every if cfg.eval_every is not None else (loop.eval_every if algo == "sac" else 0)
    eval_episodes = cfg.eval_episodes if cfg.eval_episodes is not None else 10
    own: dict[str, Any] = {"seed": cfg.seed, "device": cfg.device, "encoder_path": cfg.encoder or ""}
    if cfg.steps is not None:
        own["steps"] = cfg.steps
    if algo == "sac":
        own.update(eval_every=eval_every, eval_episodes=eval_episodes)
    loop = dataclasses.replace(loop, **own)
    if preset.needs_encoder and not cfg.encoder:
        raise TrainError(f"preset {name} trains on a frozen pretrained encoder: pass --encoder FILE (made by "
                         "`atcrl pretrain`, or `atcrl export --run RUN_DIR` from another run)")
    stack = loop.frame_stack or meta.frame_stack
    shape = (stack * meta.frame_channels, loop.image_size, loop.image_size)
    return Plan(name, algo, loop, eval_every, eval_episodes, meta.frame_channels, shape)


def check_encoder(plan: Plan) -> None:
    """Refuse an exported encoder whose input does not match what the env will produce, naming both."""
    loop, path = plan.loop, plan.loop.encoder_path
    want = tuple(encoder_info(path)["in_shape"])
    if want != plan.obs_shape:
        k = plan.obs_shape[0] // plan.frame_channels
        raise TrainError(
            f"encoder {path} reads observations of shape {want} (channels, height, width), but {loop.env} at "
            f"image size {loop.image_size} with {k} stacked {plan.frame_channels}-channel frames gives "
            f"{plan.obs_shape}: use an encoder pretrained on this env at this size, or set "
            f"--{plan.algo}.image-size / --{plan.algo}.frame-stack to match it"
        )


def default_out(plan: Plan) -> Path:
    return Path("runs") / f"{plan.preset}-{plan.loop.env.replace(':', '-')}-{plan.loop.seed}"


def resume_plan(cfg: TrainConfig) -> tuple[Path, TrainConfig, Plan]:
    """(run dir, the run's TrainConfig with this session's settings, its Plan); TrainError on disagreement."""
    run_dir = prepare_run_dir(cfg.resume, resume=True)
    info = read_run_info(run_dir)
    saved = config_from_plain(TrainConfig, info.train)
    default = TrainConfig()
    # Session settings always come from this command line; run settings from it only when given.
    changes = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name in SESSION_FIELDS or (f.name not in ("sac", "ppo")
                                               and getattr(cfg, f.name) != getattr(default, f.name))}
    changes.update(sac=merge_overrides(saved.sac, cfg.sac), ppo=merge_overrides(saved.ppo, cfg.ppo),
                   out=str(run_dir))
    merged = dataclasses.replace(saved, **changes)
    plan = resolve(merged)
    now = {"algo": plan.algo, "preset": plan.preset, **plain_config(plan.loop)}
    diffs = plain_diff(info.checkpoint_config(), now, ignore=RESUMABLE_CHANGES)
    if diffs:
        raise TrainError(f"cannot resume {run_dir} with different settings: {'; '.join(diffs)}. "
                         "Resume with the run's own settings (flags can be left out), or start a new run "
                         "with another --out")
    return run_dir, merged, plan


def run_train(cfg: TrainConfig) -> int:
    """``atcrl train``: 0 when the run finished, 2 on bad input, 3 when a loss became NaN/inf."""
    from atcrl.data.dataset import DatasetError
    from atcrl.train.train_session import Diverged, start_session, train_session

    try:
        if cfg.resume:
            run_dir, cfg, plan = resume_plan(cfg)
        else:
            plan = resolve(cfg)
            if plan.loop.encoder_path:
                check_encoder(plan)
            run_dir = prepare_run_dir(cfg.out or default_out(plan), resume=False, create=False)
        if cfg.video_every:
            from atcrl.train.evaluate import check_video_format

            check_video_format("." + cfg.video_format)
        session = start_session(cfg, plan, run_dir)
    except (TrainError, TrainRunError, CheckpointError, DatasetError, FileExistsError, FileNotFoundError,
            ValueError, ImportError) as e:
        print(f"atcrl train: error: {e}", file=sys.stderr)
        return 2
    try:
        return train_session(session)
    except Diverged as e:
        print(f"atcrl train: stopped: {e}", file=sys.stderr)
        return 3
