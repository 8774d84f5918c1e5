"""What `atcrl train` was asked for (``TrainConfig``) and what it resolves to (``Plan``), fresh or resumed.

Resolution, lowest priority first: the preset's loop config for the env (atcrl.presets.RL_PRESETS: the
agent loop's paper defaults for the env, SAC with the task's run length and cheetah's batch and lr, with the
preset's own fields set), then the flags given. ``--sac.*`` and
``--ppo.*`` (one group per registered agent, atcrl.train.algorithms) expose every field of its loop
config (``agent`` is its hyperparameter block); a flag left out keeps the preset's value.

Resuming reads the run's config.json and restores every setting recorded there (checkpoint and video
cadence, TensorBoard, replay checkpoints, logging, the agent flags) unless the command line sets it; a
flag counts as set when its value differs from its default. Settings that change what is trained must
agree with the run (a disagreement is an error naming each field), except those given as
``--allow-change sac.agent.q_lr=3e-4``, which are recorded in config.json's "history". Fields marked
``resumable`` (atcrl.resumable) may change freely; ``session_only`` ones (device, --stop-after, ...) belong
to this process and are never restored.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from atcrl.checkpoint import plain_config, prepare_run_dir
from atcrl.encoder_io import encoder_info
from atcrl.presets import DEFAULT_RL_PRESET, RL_PRESETS, rl_preset
from atcrl.resumable import RESUMABLE, SESSION_ONLY, resumable_fields, session_fields
from atcrl.train.algorithms import ALGORITHMS, Algorithm, algorithm, train_presets
from atcrl.train.config_args import parse_value
from atcrl.train.overrides import (
    apply_overrides,
    config_from_plain,
    config_path,
    given,
    merge_overrides,
    plain_diff,
    with_override,
)
from atcrl.train.rl_checkpoint import RunInfo, read_run_info

DEFAULT_ENV = RL_PRESETS[DEFAULT_RL_PRESET[False]].env


@dataclass(frozen=True)
class TrainSettings:
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
    out: str | None = field(default=None, metadata=SESSION_ONLY)
    """Run directory; None = runs/<preset>-<env>-<seed>. An existing non-empty one is never overwritten."""
    resume: str | None = field(default=None, metadata=SESSION_ONLY)
    """Continue the run in this directory from its latest checkpoint, with the settings recorded in it
    (flags given with it change the session settings; see --allow-change for the others)."""
    allow_change: tuple[str, ...] = field(default=(), metadata=SESSION_ONLY)
    """With --resume: change settings the run was started with, as DOTTED.NAME=VALUE (e.g.
    sac.agent.q_lr=3e-4 to lower a learning rate after a divergence); recorded in the run's config.json."""
    encoder: str | None = None
    """Exported encoder (.safetensors/.json or directory) to start from; required by the frozen presets."""
    device: str = field(default="auto", metadata=SESSION_ONLY)
    """"auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ..."""
    eval_every: int | None = field(default=None, metadata=RESUMABLE)
    """Agent steps between deterministic evaluations (0 = only at the end); None = SAC 1000 (paper), PPO 0."""
    eval_episodes: int | None = field(default=None, metadata=RESUMABLE)
    """Episodes per evaluation; None = 10."""
    video_every: int = field(default=0, metadata=RESUMABLE)
    """Agent steps between evaluation videos in RUN_DIR/videos (0 = none); SAC records at evaluation steps."""
    video_format: Literal["gif", "mp4"] = field(default="gif", metadata=RESUMABLE)
    """Video container (mp4 needs imageio's ffmpeg plugin)."""
    ckpt_every: int = field(default=5000, metadata=RESUMABLE)
    """Agent steps between checkpoints: one at every multiple (one is always written at the end)."""
    keep_checkpoints: int = field(default=3, metadata=RESUMABLE)
    """How many of the newest checkpoints to keep."""
    checkpoint_replay: bool = field(default=False, metadata=RESUMABLE)
    """Also checkpoint the replay, so a resumed SAC run continues exactly; without it the replay refills after
    a resume. Large (up to capacity x frame bytes per checkpoint, 2 GB at the paper's DMC sizes): consider
    --keep-checkpoints 1."""
    tensorboard: bool = field(default=True, metadata=RESUMABLE)
    """Also write TensorBoard event files (metrics.jsonl/csv are always written)."""
    wandb: bool = field(default=False, metadata=RESUMABLE)
    """Also log to Weights & Biases (the wandb extra): the same metrics, the config and eval videos. A resumed
    run continues the same W&B run; WANDB_MODE=offline keeps it in RUN/wandb for a later `wandb sync`."""
    wandb_project: str = field(default="atcrl", metadata=RESUMABLE)
    """The Weights & Biases project of --wandb."""
    stop_after: int | None = field(default=None, metadata=SESSION_ONLY)
    """End this session (with a checkpoint) once this many agent steps are done; --resume continues it."""

    def __post_init__(self) -> None:
        for name in ("ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "eval_every", "eval_episodes", "video_every", "stop_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.allow_change and not self.resume:
            raise ValueError("--allow-change changes a run being resumed: use it with --resume RUN_DIR")


def _with_agent_groups(settings: type) -> type:
    """``settings`` plus one ``--<agent>.*`` group per registered agent that has flags."""
    groups = [(a.name, Annotated[a.overrides, tyro.conf.arg(help=f"{a.name.upper()} loop and agent settings "
                                                                 f"(used by {', '.join(a.presets)})")],
               dataclasses.field(default_factory=a.overrides))
              for a in ALGORITHMS.values() if a.overrides is not None]
    made = dataclasses.make_dataclass("TrainConfig", groups, bases=(settings,), frozen=True)
    made.__doc__, made.__module__ = settings.__doc__, __name__
    return made


TrainConfig = _with_agent_groups(TrainSettings)
"""TrainSettings with the agents' flag groups (``sac``, ``ppo``): what `atcrl train` parses."""


class TrainError(ValueError):
    """The run cannot start as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """A TrainConfig resolved against its preset and env."""

    preset: str
    algo: str
    """The agent (a key of atcrl.train.algorithms.ALGORITHMS)."""
    loop: Any
    """The agent's loop config, complete."""
    eval_every: int
    eval_episodes: int
    frame_channels: int
    """Channels of one frame of the env (for videos)."""
    obs_shape: tuple[int, int, int]
    """The stacked observation the env will produce [k * C, H, W]."""

    @property
    def algorithm(self) -> Algorithm:
        return algorithm(self.algo)


def _probe(env: str, image_size: int) -> Any:
    """The env's EnvMeta (made once, never stepped); non-image and unknown envs fail here."""
    from atcrl.envs import env_meta, make_env

    probe = make_env(env, image_size=image_size)
    try:
        return env_meta(probe)
    finally:
        probe.close()


def _flags(cfg: Any, algo: Algorithm) -> Any:
    """The ``--<agent>.*`` overrides of ``cfg`` (None when the agent has no flag group)."""
    return getattr(cfg, algo.name, None)


def resolve(cfg: Any) -> Plan:
    """Preset + env + flags -> Plan; TrainError for combinations that cannot run."""
    presets = train_presets()
    name = cfg.preset
    preset = rl_preset(name, presets) if name else None
    env = cfg.env if cfg.env is not None else (preset.env if preset else DEFAULT_ENV)  # "" is refused by make_env
    sizes = [f.image_size for a in ALGORITHMS.values() if (f := _flags(cfg, a)) is not None and f.image_size]
    meta = _probe(env, sizes[0] if sizes else 84)
    if preset is None:
        name = DEFAULT_RL_PRESET[meta.discrete]
        preset = presets[name]
    algo = algorithm(preset.algo)
    if meta.discrete != algo.discrete:
        kind = "discrete" if meta.discrete else "continuous"
        want = "/".join(a.name.upper() for a in ALGORITHMS.values() if a.discrete == meta.discrete)
        fits = [k for k, p in presets.items() if algorithm(p.algo).discrete == meta.discrete]
        raise TrainError(f"preset {name} trains {algo.name.upper()}, but {env} has {kind} actions, which need "
                         f"{want}: use one of --preset {', '.join(fits)} (or leave --preset out)")
    for other in ALGORITHMS.values():
        set_flags = given(flags) if other is not algo and (flags := _flags(cfg, other)) is not None else {}
        if set_flags:
            raise TrainError(f"--{other.name}.* options ({', '.join(set_flags)}) do not apply: preset {name} "
                             f"trains {algo.name.upper()}")
    loop = preset.config(env)
    if (flags := _flags(cfg, algo)) is not None:
        loop = apply_overrides(loop, flags)
    eval_every = cfg.eval_every if cfg.eval_every is not None else (loop.eval_every if algo.loop_evaluates else 0)
    eval_episodes = cfg.eval_episodes if cfg.eval_episodes is not None else 10
    own: dict[str, Any] = {"seed": cfg.seed, "device": cfg.device, "encoder_path": cfg.encoder or ""}
    if cfg.steps is not None:
        own["steps"] = cfg.steps
    if algo.loop_evaluates:
        own.update(eval_every=eval_every, eval_episodes=eval_episodes)
    loop = dataclasses.replace(loop, **own)
    if preset.needs_encoder and not cfg.encoder:
        raise TrainError(f"preset {name} trains on a frozen pretrained encoder: pass --encoder FILE (made by "
                         "`atcrl pretrain`, or `atcrl export --run RUN_DIR` from another run)")
    from atcrl.envs.registry import frame_size

    stack = loop.frame_stack or meta.frame_stack
    shape = (stack * meta.frame_channels, *frame_size(meta.family, loop.image_size))
    return Plan(name, algo.name, loop, eval_every, eval_episodes, meta.frame_channels, shape)


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


# --------------------------------------------------------------------------- resuming


@dataclass(frozen=True)
class Resumed:
    """A run to continue: its directory, the TrainConfig this session runs it with, its Plan, and what
    --allow-change changed (config path -> [the run's value, the new one])."""

    run_dir: Path
    cfg: Any
    plan: Plan
    changes: dict[str, list[Any]]

    def run_info(self, info: RunInfo, step: int) -> RunInfo:
        """config.json after this resumption: the changed settings, and a history entry recording them."""
        # Only the agent's flags change; the run's other recorded settings stay as they were.
        name = self.plan.algo
        train = {**info.train, name: plain_config(getattr(self.cfg, name))}
        entry = {"step": step, "allowed_changes": self.changes}
        return dataclasses.replace(info, loop=plain_config(self.plan.loop), train=train,
                                   history=[*info.history, entry])


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _allow_example(algo: Algorithm) -> str:
    return f"{algo.name}.{algo.lr_fields[0]}=3e-4" if algo.lr_fields else f"{algo.name}.NAME=VALUE"


def _changeable(algo: Algorithm) -> str:
    names = [f"{algo.name}.{c}" for c in algo.changeable]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else (names[0] if names else "no setting")


def _allow_changes(cfg: Any, plan: Plan) -> tuple[Any, dict[str, tuple[str, ...]]]:
    """``cfg`` with the --allow-change values laid over its agent flags; and CLI key -> loop path of each."""
    algo = plan.algorithm
    paths: dict[str, tuple[str, ...]] = {}
    for item in cfg.allow_change:
        key, sep, text = item.partition("=")
        group, _, rest = key.strip().partition(".")
        flags = _flags(cfg, algo)
        if not sep or not rest:
            raise TrainError(f"--allow-change takes GROUP.NAME=VALUE (e.g. {_allow_example(algo)}), got {item!r}")
        if group != algo.name or flags is None:
            raise TrainError(f"--allow-change {item!r}: this run trains {algo.name.upper()}, so its settings are "
                             f"{algo.name}.*")
        if rest.replace("-", "_") not in algo.changeable:
            raise TrainError(f"--allow-change {item!r}: only {_changeable(algo)} may change on resume")
        try:
            path = config_path(type(flags), rest)
            value = parse_value(text.strip(), _get(plan.loop, path))
        except ValueError as e:
            raise TrainError(f"--allow-change {item!r}: {e}") from e
        cfg = dataclasses.replace(cfg, **{algo.name: with_override(flags, rest, value)})
        paths[key.strip()] = path
    return cfg, paths


def resume_plan(cfg: Any) -> Resumed:
    """The run to continue, with the settings recorded in it and those this command line sets; TrainError
    when a setting that changes what is trained disagrees with the run and is not allowed to change."""
    run_dir = prepare_run_dir(cfg.resume, resume=True)
    info = read_run_info(run_dir)
    saved = config_from_plain(TrainConfig, info.train)
    default = TrainConfig()
    session = session_fields(TrainSettings)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        mine = getattr(cfg, f.name)
        if f.name in ALGORITHMS:
            changes[f.name] = merge_overrides(getattr(saved, f.name), mine)
        elif f.name in session or mine != getattr(default, f.name):
            changes[f.name] = mine
    merged = dataclasses.replace(saved, **{**changes, "out": str(run_dir)})
    before = resolve(merged)
    merged, allowed = _allow_changes(merged, before)
    plan = resolve(merged) if allowed else before
    ignore = resumable_fields(plan.algorithm.config_cls)
    now = {"algo": plan.algo, "preset": plan.preset, **plain_config(plan.loop)}
    diffs = plain_diff(info.checkpoint_config(), now, ignore=(*ignore, *(".".join(p) for p in allowed.values())))
    if diffs:
        raise TrainError(f"cannot resume {run_dir} with different settings: {'; '.join(diffs)}. Resume with the "
                         "run's own settings (flags can be left out), start a new run with another --out, or change "
                         f"{_changeable(plan.algorithm)} on purpose with --allow-change NAME=VALUE")
    loop_now = plain_config(plan.loop)
    changed = {".".join(p): [_get_plain(info.loop, p), _get_plain(loop_now, p)] for p in allowed.values()}
    changed = {k: v for k, v in changed.items() if v[0] != v[1]}
    return Resumed(run_dir, merged, plan, changed)


def _get_plain(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree.get(name, "<absent>") if isinstance(tree, dict) else "<absent>"
    return tree


def retry_command(plan: Plan, run_dir: Path) -> str:
    """A command that resumes ``run_dir`` from its last checkpoint with halved learning rates (after a
    divergence), shell-quoted."""
    algo = plan.algorithm
    flags = _flags(TrainConfig(), algo)
    lowered = [f"{algo.name}.{name}={_get(plan.loop, config_path(type(flags), name)) / 2:g}"
               for name in (algo.lr_fields if flags is not None else ())]
    return shlex.join(["atcrl", "train", "--resume", str(run_dir), *(["--allow-change", *lowered] if lowered else [])])
