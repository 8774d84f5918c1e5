"""Offline UL pretraining: train one encoder on recorded episodes, then export it.

    atcrl pretrain --data DATASET [DATASET ...] --preset dmc --out runs/atc-dmc
    torchrun --standalone --nproc-per-node 2 -m atcrl.train.pretrain --data ... --out ...

Several dataset directories (or a dataset holding several tasks) give one multi-task encoder:
every batch is split evenly across tasks. Episodes, not steps, are held out for validation, so
validation pairs never share an episode with training pairs.

Reproducibility: the sampling RNG and the torch RNG (augmentations) are re-derived at every update
from (seed, rank, update), so a run resumed from a checkpoint draws exactly the batches and shifts
the uninterrupted run would have drawn, and validation (which also uses randomness) never moves
the training stream.

Data parallel (torchrun, WORLD_SIZE > 1): gloo on CPU, nccl on CUDA. Each rank samples
global_batch / world_size rows with its own RNG and computes the loss on its own rows; DDP averages
the gradients, so every rank applies the same update and momentum targets, which follow the online
weights, stay identical. Codes are not gathered across ranks: an objective with in-batch negatives
(ATC, AC, CPC, ST-DIM) contrasts global_batch / world_size rows per rank, i.e. a global batch of B
on N ranks is N contrastive problems of B/N rows each, averaged. Keep B/N at the paper's batch (e.g.
256 for DMC) to keep its negatives. Only rank 0 logs, validates, checkpoints and exports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from atcrl.atomic import atomic_write
from atcrl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    plain_config,
    prepare_run_dir,
    rng_state,
    save_rotating,
    set_rng_state,
)
from atcrl.data.dataset import DatasetError, EpisodeDataset, open_datasets
from atcrl.data.multitask import MultiTaskReplay
from atcrl.data.replay import Replay
from atcrl.device import resolve_device
from atcrl.encoder_io import export_encoder
from atcrl.fastpath import FastPathConfig, autocast, captures, describe, prepare_module
from atcrl.metrics_log import MetricsLogger
from atcrl.nets.encoders import ConvEncoder, EncoderName
from atcrl.presets import pretrain_preset
from atcrl.process import configure_process
from atcrl.progress import Progress
from atcrl.resumable import RESUMABLE, resumable_fields
from atcrl.runlock import hold_dir_lock
from atcrl.train.config_args import parse_overrides
from atcrl.train.distributed import Dist, average_metrics, init_distributed, wrap_for_ddp
from atcrl.train.interrupt import StopOnCtrlC
from atcrl.train.pretrain_step import PretrainStep, tensor_loss
from atcrl.ul.base import Objective, SamplingNeed
from atcrl.ul.optim import (
    ULOptimConfig,
    make_ul_optimizer,
    objective_grad_clip,
    trainable_parameters,
)
from atcrl.ul.registry import atc_family, default_config, make_objective

KIND = "pretrain"
CKPT_DIR = "checkpoints"
MIN_VALID_PAIRS = 0.5
"""Below this fraction of valid pairs in a trial batch, pretrain warns that delta_t is too long for the data."""
_VAL_TAG = 0x7A1  # keeps validation seeds apart from the per-update training seeds


class PretrainError(ValueError):
    """The inputs cannot be pretrained on as given; the message says which and why."""


@dataclass(frozen=True)
class PretrainConfig:
    """Pretrain an encoder with an unsupervised objective on recorded episodes."""

    data: tuple[str, ...]
    """Dataset directories (atcrl episode format). Several, or one holding several tasks, train one multi-task encoder."""
    objective: str = "atc"
    """UL objective: atc, ac, ats, cpc, stdim, vae, pixel-control, inverse, or random (exports the untrained
    encoder drawn from --seed, so the random baseline goes through the same pipeline as the others)."""
    objective_args: tuple[str, ...] = ()
    """Other settings of the objective's config as NAME=VALUE, e.g. `--objective-args length=8 crop=32`
    (field names as in its config dataclass; --batch-size and --delta-t have their own flags)."""
    preset: Literal["dmc", "atari", "dmlab"] | None = "dmc"
    """Paper settings: encoder, Δt, batch, updates, shift probability, latent size, lr schedule. Δt, batch,
    latent and shift apply to atc/ac/ats; other objectives keep their own defaults for those."""
    encoder: EncoderName | None = None
    """Conv architecture; None = the preset's (dmc without a preset)."""
    updates: int | None = None
    """Total UL updates (the cosine schedule ends here); None = the preset's (10k dmc, 20k atari, 30k dmlab)."""
    batch_size: int | None = None
    """Global batch: pairs (or sequences) per update summed over DDP ranks; None = the preset's/objective's.
    With N ranks each rank contrasts batch_size / N rows (negatives are not gathered across ranks)."""
    delta_t: int | None = None
    """Anchor-positive offset for pair objectives; None = the preset's/objective's."""
    lr: float | None = None
    """Peak learning rate; None = the preset's (1e-3)."""
    warmup_updates: int | None = None
    """Linear warm-up updates; None = the preset's 1000, capped at a tenth of --updates for short runs."""
    out: str = field(default="runs/pretrain", metadata=RESUMABLE)
    """Run directory: config, metrics, checkpoints and the exported encoder. Never overwritten without --resume."""
    resume: bool = field(default=False, metadata=RESUMABLE)
    """Continue the run in --out from its latest checkpoint (same settings required)."""
    seed: int = 0
    """Seed of the weight init, the train/validation split, sampling and augmentation."""
    val_fraction: float = 0.1
    """Fraction of each task's episodes held out for validation loss/accuracy (0 disables validation)."""
    val_batches: int = field(default=4, metadata=RESUMABLE)
    """Batches per validation pass (the same fixed batches every time, so the curve is comparable)."""
    eval_every: int = field(default=1000, metadata=RESUMABLE)
    """Updates between validation passes."""
    ckpt_every: int = field(default=1000, metadata=RESUMABLE)
    """Updates between checkpoints (one is also written when the run stops)."""
    keep_checkpoints: int = field(default=3, metadata=RESUMABLE)
    """How many of the newest checkpoints to keep."""
    log_every: int = field(default=100, metadata=RESUMABLE)
    """Updates between metric records (each the mean over the updates since the last one)."""
    stop_after: int | None = field(default=None, metadata=RESUMABLE)
    """Stop after this many updates (checkpointed, not exported) to continue later with --resume."""
    device: str = field(default="auto", metadata=RESUMABLE)
    """"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"."""
    device_data: bool | None = None
    """Copy the training episodes into the device's memory and draw pair batches there (DeviceReplay): no
    host-side gather and no batch copy per update. None = on where the device is CUDA and the objective
    samples pairs (sequence objectives sample on the host). The anchors are then drawn with torch's generator
    (seeded per update, so resuming still draws the same batches), not numpy's: other, equally distributed
    batches than on the host."""
    fast: FastPathConfig = field(default_factory=FastPathConfig, metadata=RESUMABLE)
    """Precision, activation layout, torch.compile, CPU threads and allocator (docs/performance.md);
    `--fast.bf16 False --fast.no-channels-last --fast.no-tune-allocator` is the plain fp32 eager path."""
    tensorboard: bool = field(default=True, metadata=RESUMABLE)
    """Also write TensorBoard event files (metrics.jsonl/csv are always written)."""
    wandb: bool = field(default=False, metadata=RESUMABLE)
    """Also log to Weights & Biases (the wandb extra): the same metrics, the config and eval videos. A resumed
    run continues the same W&B run; WANDB_MODE=offline keeps it in RUN/wandb for a later `wandb sync`."""
    wandb_project: str = field(default="atcrl", metadata=RESUMABLE)
    """The Weights & Biases project of --wandb."""
    skip_corrupt: bool = field(default=False, metadata=RESUMABLE)
    """Leave out episode files that are damaged or hold NaN/Inf (each is named on stderr) instead of stopping."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("give at least one dataset directory with --data")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("eval_every", "ckpt_every", "keep_checkpoints", "log_every", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("updates", "batch_size", "stop_after"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Settings:
    """What the preset and the overrides resolve to."""

    encoder: EncoderName
    objective: Any
    """The objective's config dataclass (None for objectives without one)."""
    optim: ULOptimConfig


def resolve_settings(cfg: PretrainConfig) -> Settings:
    """Preset values, then the objective's own defaults, then explicit overrides."""
    preset = pretrain_preset(cfg.preset) if cfg.preset else None
    try:
        obj_cfg = default_config(cfg.objective)
    except (ValueError, ImportError) as e:
        raise PretrainError(f"objective {cfg.objective!r} is not available: {e}") from e
    if preset is not None and atc_family(cfg.objective):
        obj_cfg = preset.atc  # make_objective turns an ATCConfig into the ac/ats variant
    if cfg.objective == "random" and obj_cfg.seed is None:
        obj_cfg = dataclasses.replace(obj_cfg, seed=cfg.seed)  # weights depend on the seed alone
    try:
        overrides = parse_overrides(obj_cfg, cfg.objective_args, what=f"objective {cfg.objective!r}")
    except ValueError as e:
        raise PretrainError(f"--objective-args: {e}") from e
    overrides.update({k: v for k, v in (("batch_size", cfg.batch_size), ("delta_t", cfg.delta_t)) if v is not None})
    if overrides:
        known = {f.name for f in dataclasses.fields(obj_cfg)} if dataclasses.is_dataclass(obj_cfg) else set()
        if unknown := sorted(set(overrides) - known):
            raise PretrainError(f"objective {cfg.objective!r} has no setting {', '.join(unknown)}"
                                f"{'; it has ' + ', '.join(sorted(known)) if known else ''}")
        try:
            obj_cfg = dataclasses.replace(obj_cfg, **overrides)
        except (TypeError, ValueError) as e:
            raise PretrainError(f"objective {cfg.objective!r}: {e}") from e
    base = preset.optim if preset else ULOptimConfig()
    total = cfg.updates or base.total_updates
    warmup = cfg.warmup_updates if cfg.warmup_updates is not None else min(base.warmup_updates, total // 10)
    optim = dataclasses.replace(base, total_updates=total, warmup_updates=warmup, lr=cfg.lr or base.lr)
    return Settings(cfg.encoder or (preset.encoder if preset else "dmc"), obj_cfg, optim)


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    train: MultiTaskReplay
    val: MultiTaskReplay | None
    in_shape: tuple[int, int, int]
    """Stacked observation shape (frame_stack * C, H, W)."""
    tasks: list[str]
    action_dim: int | None
    """Number of discrete actions, or the size of a continuous action (the largest over tasks, as the
    multi-task replay pads to it); None when a discrete dataset does not record its number of actions."""
    discrete_actions: bool


def load_data(cfg: PretrainConfig) -> Data:
    """Open every dataset, split each task's episodes into train/val, and fill one replay per task."""
    datasets = open_datasets(cfg.data, skip_corrupt=cfg.skip_corrupt, command="pretrain")
    first = datasets[0]
    for ds in datasets[1:]:
        a, b = _layout(first), _layout(ds)
        if a != b:
            raise PretrainError(f"datasets {first.path} and {ds.path} differ in (frame shape, frame dtype, "
                                f"frame stack): {a} vs {b}; one encoder needs one observation layout")
    by_task: dict[str, list[tuple[EpisodeDataset, int]]] = {}
    for ds in datasets:
        for i, s in enumerate(ds.summaries):
            by_task.setdefault(s.task or ds.path.name, []).append((ds, i))
    rng = np.random.default_rng([cfg.seed, _VAL_TAG])
    train, val = {}, {}
    for task, items in by_task.items():
        n_val = 0
        if cfg.val_fraction > 0 and len(items) >= 2:
            n_val = min(len(items) - 1, max(1, round(cfg.val_fraction * len(items))))
        held_out = set(rng.choice(len(items), n_val, replace=False).tolist())
        train[task] = [it for j, it in enumerate(items) if j not in held_out]
        if held_out:
            val[task] = [it for j, it in enumerate(items) if j in held_out]
    k = first.meta.frame_stack
    try:
        train_replay = MultiTaskReplay([_replay(items, k) for items in train.values()], list(train))
        val_replay = MultiTaskReplay([_replay(items, k) for items in val.values()], list(val)) if val else None
    except ValueError as e:
        raise PretrainError(f"{_names(cfg)}: {e}") from e
    c, h, w = first.meta.frame_shape
    action_dim, discrete = _action_space(datasets)
    return Data(train_replay, val_replay, (k * c, h, w), list(by_task), action_dim, discrete)


def _action_space(datasets: list[EpisodeDataset]) -> tuple[int | None, bool]:
    """What objectives that read actions are told: discrete -> number of actions, continuous -> vector size.

    The replays already agree on discrete vs continuous. Across tasks the largest size is used: the
    multi-task replay zero-pads smaller continuous actions, and smaller discrete sets are index ranges
    inside the largest one.
    """
    discrete = datasets[0].meta.discrete
    sizes = [ds.meta.num_actions if discrete else int(np.prod(ds.meta.action_shape)) for ds in datasets]
    return (None if None in sizes else max(sizes)), discrete


def _layout(ds: EpisodeDataset) -> tuple:
    return ds.meta.frame_shape, ds.meta.frame_dtype, ds.meta.frame_stack


def _replay(items: list[tuple[EpisodeDataset, int]], frame_stack: int) -> Replay:
    # Sized from the file headers so episodes stream from disk into the replay one at a time.
    capacity = sum(ds.summaries[i].steps + 1 for ds, i in items)
    return Replay.from_episodes((ds[i] for ds, i in items), frame_stack=frame_stack, capacity=capacity)


def _names(cfg: PretrainConfig) -> str:
    return ("dataset " if len(cfg.data) == 1 else "datasets ") + ", ".join(cfg.data)


def sample(replay: MultiTaskReplay, need: SamplingNeed, batch_size: int, rng: np.random.Generator):
    if need.kind == "pairs":
        return replay.sample_pairs(batch_size, rng, delta_t=need.delta_t, run=need.run)
    return replay.sample_sequences(batch_size, rng, length=need.length)


def update_rng(seed: int, rank: int, update: int) -> np.random.Generator:
    """The sampling RNG of one update; also reseeds torch (augmentations) from the same stream."""
    np_seq, torch_seq = np.random.SeedSequence([seed, rank, update]).spawn(2)
    torch.manual_seed(int(torch_seq.generate_state(1, np.uint64)[0]))
    return np.random.default_rng(np_seq)


# --------------------------------------------------------------------------- one run


def run_pretrain(cfg: PretrainConfig, *, raise_errors: bool = False) -> int:
    """Train, validate, checkpoint and export as ``cfg`` says; returns the exit code (raise_errors: raise, not 2)."""
    cfg = dataclasses.replace(cfg, data=tuple(str(Path(p).resolve()) for p in cfg.data))
    dist = None
    try:
        try:
            device = resolve_device(cfg.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
        except ValueError as e:
            raise PretrainError(str(e)) from e
        dist = init_distributed(device.type)
        return _run(cfg, dist, device)
    except (PretrainError, DatasetError, CheckpointError, FileExistsError, FileNotFoundError) as e:
        if raise_errors:
            raise
        print(f"atcrl pretrain: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist is not None:
            dist.close()


def _run(cfg: PretrainConfig, dist: Dist, device: torch.device) -> int:
    settings = resolve_settings(cfg)
    out = prepare_run_dir(cfg.out, resume=cfg.resume, create=False)  # every rank checks; rank 0 creates
    if cfg.resume and dist.is_main:  # one writer per run directory (a fresh one is locked when created)
        hold_dir_lock(out, what="run directory")
    configure_process(cfg.fast)  # threads and allocator, before the replay and the model allocate
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    data = load_data(cfg)
    try:
        encoder = ConvEncoder(settings.encoder, data.in_shape)
    except ValueError as e:
        raise PretrainError(f"{_names(cfg)}: {e}") from e
    objective = prepare_module(_build_objective(cfg, settings, encoder, data).to(device), cfg.fast)
    if not trainable_parameters(objective):  # the random-encoder baseline
        return _export_untrained(cfg, settings, data, objective, out, dist)
    need: SamplingNeed = objective.sampling
    if need.batch_size % (dist.world_size * need.run):
        per_run = f" runs of {need.run} anchors" if need.run > 1 else ""
        raise PretrainError(f"the global batch {need.batch_size} does not split evenly into{per_run} over "
                            f"{dist.world_size} ranks; pick a multiple of {dist.world_size * need.run}")
    local_batch = need.batch_size // dist.world_size
    _check_sampling(cfg, data, need, local_batch)
    on_device = device.type == "cuda" and need.kind == "pairs" if cfg.device_data is None else cfg.device_data
    if on_device:
        if need.kind != "pairs":
            raise PretrainError(f"device_data samples pair batches; {cfg.objective} samples sequences: "
                                "drop --device-data")
        data = dataclasses.replace(data, train=data.train.to(device))
    if captures(cfg.fast, device):
        _check_capture(cfg, objective, data, dist, on_device, local_batch)
    optimizer, scheduler = make_ul_optimizer(objective, settings.optim, fast=cfg.fast)

    start = 0
    if cfg.resume:
        if latest_checkpoint(out / CKPT_DIR) is None:
            raise PretrainError(f"{out} holds no checkpoint to resume from (the run stopped before its first "
                                "one); delete that directory or choose another --out")
        ckpt = load_checkpoint(out / CKPT_DIR, kind=KIND, config=cfg, ignore=resumable_fields(PretrainConfig))
        objective.load_state_dict(ckpt.state["objective"])
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
        set_rng_state(ckpt.state["rng"])
        start = int(ckpt.state["update"])
        if dist.is_main and int(ckpt.state["world_size"]) != dist.world_size:
            print(f"note: resuming a {ckpt.state['world_size']}-process run on {dist.world_size} processes; "
                  "batches will differ from the uninterrupted run", file=sys.stderr)
    total = settings.optim.total_updates
    stop = min(total, cfg.stop_after) if cfg.stop_after else total
    if dist.is_main:
        hold_dir_lock(out, what="run directory", fresh=not cfg.resume)
        _write_run_info(out, cfg, settings, data, dist, describe(cfg.fast, device))
    dist.barrier()
    step = PretrainStep(objective, optimizer, scheduler, settings.optim,
                        objective_grad_clip(settings.objective, settings.optim.grad_clip),
                        seed=lambda update: update_rng(cfg.seed, dist.rank, update),
                        draw=lambda rng: sample(data.train, need, local_batch, rng).to(device),
                        forward=wrap_for_ddp(objective, dist, device, tensor_loss(objective)), fast=cfg.fast,
                        device=device)

    logger = MetricsLogger(out, tensorboard=cfg.tensorboard, enabled=dist.is_main,
                           resume_from_step=start if cfg.resume else None,
                           wandb_project=cfg.wandb_project if cfg.wandb else None, config=plain_config(cfg))
    bar = Progress(total, initial=start, desc=f"pretrain {cfg.objective}", show=("ul/loss", "ul/accuracy"),
                   enabled=dist.is_main)
    window = _Window()
    metrics: dict[str, float] = {}  # the last interval's means (the progress bar shows them)
    val_metrics: dict[str, float] = {}
    # Under DDP each rank would see Ctrl-C at a different update and wait for the others: there it aborts.
    ctrl_c = StopOnCtrlC("stopping with a checkpoint after this update", enabled=dist.world_size == 1)
    interrupted = False
    try:
        with ctrl_c:
            for update in range(start, stop):
                t0 = time.perf_counter()
                step(update)
                window.add(time.perf_counter() - t0)
                done = update + 1
                if done % cfg.log_every == 0 or done == stop:
                    t0 = time.perf_counter()
                    metrics = step.read()  # waits for the interval's updates: part of their time
                    window.add(time.perf_counter() - t0, updates=0)
                    logger.log(done, average_metrics({**metrics, **window.flush()}, dist, device))
                if data.val is not None and dist.is_main and (done % cfg.eval_every == 0 or done == total):
                    val_metrics = validate(objective, data.val, need, local_batch, cfg, device)
                    logger.log(done, val_metrics)
                interrupted = ctrl_c.requested and done < stop
                if done % cfg.ckpt_every == 0 or done == stop or interrupted:
                    step.check_finite()  # a diverged run never writes a checkpoint
                    _checkpoint(out, done, objective, optimizer, scheduler, cfg, dist)
                bar.update(1, metrics)
                if interrupted:
                    break
    finally:
        bar.close()
        logger.close()
    if interrupted:
        print(f"stopped at update {done} of {total} (Ctrl-C); continue with the same command plus --resume "
              f"--out {shlex.quote(str(out))}", file=sys.stderr)
        return 130
    if stop < total:
        if dist.is_main:
            print(f"stopped after {stop} of {total} updates; continue with the same command plus --resume "
                  f"--out {shlex.quote(str(out))}", file=sys.stderr)
        return 0
    if dist.is_main:
        path = export_encoder(
            objective.encoder, out, objective=cfg.objective, data=list(cfg.data),
            extra={"updates": total, "preset": cfg.preset, "seed": cfg.seed, "world_size": dist.world_size,
                   "tasks": data.tasks, "objective_config": _plain(settings.objective), **val_metrics},
        )
        print(f"exported encoder to {path}", file=sys.stderr)
    dist.barrier()
    return 0


def _check_capture(cfg: PretrainConfig, objective: Objective, data: Data, dist: Dist, on_device: bool,
                   local_batch: int) -> None:
    """PretrainError unless the update can be captured as one CUDA graph (fast.cuda_graph on CUDA)."""
    fix = "or turn --fast.cuda-graph off"
    if not on_device:
        raise PretrainError(f"--fast.cuda-graph needs the training pairs on the device: drop --device-data False, "
                            f"{fix}")
    if dist.world_size > 1:
        raise PretrainError(f"--fast.cuda-graph captures a single-process run, not {dist.world_size} DDP ranks: {fix}")
    if tensor_loss(objective) == objective.loss:
        raise PretrainError(f"--fast.cuda-graph needs an objective whose metrics stay on the device (the ATC "
                            f"family); {cfg.objective} reads its metrics per update: {fix}")
    tasks = len(data.train.replays)
    if local_batch % tasks:
        raise PretrainError(f"--fast.cuda-graph needs a batch that splits evenly over the {tasks} tasks (one graph, "
                            f"fixed shares); {local_batch} does not: pick a multiple of {tasks}, {fix}")


def _build_objective(cfg: PretrainConfig, settings: Settings, encoder: ConvEncoder, data: Data) -> Objective:
    try:
        return make_objective(cfg.objective, encoder, settings.objective, action_dim=data.action_dim,
                              discrete_actions=data.discrete_actions)
    except ValueError as e:
        why = ""
        if data.action_dim is None and "action" in str(e):
            why = " (its meta.json does not record num_actions, the size of the discrete action set)"
        raise PretrainError(f"objective {cfg.objective!r} cannot be built for {_names(cfg)}{why}: {e}") from e


def _export_untrained(cfg: PretrainConfig, settings: Settings, data: Data, objective: Objective, out: Path,
                      dist: Dist) -> int:
    """An objective with nothing to train (the random baseline): write the run info, export the initial weights."""
    if dist.is_main:
        hold_dir_lock(out, what="run directory", fresh=not cfg.resume)
        _write_run_info(out, cfg, settings, data, dist)
        path = export_encoder(objective.encoder, out, objective=cfg.objective, data=list(cfg.data),
                              extra={"updates": 0, "preset": cfg.preset, "seed": cfg.seed, "tasks": data.tasks,
                                     "objective_config": _plain(settings.objective)})
        print(f"objective {cfg.objective} trains nothing; exported its untrained encoder to {path}", file=sys.stderr)
    dist.barrier()
    return 0


def _check_sampling(cfg: PretrainConfig, data: Data, need: SamplingNeed, local_batch: int) -> None:
    """Draw one training and one validation batch now, so bad sizes fail before the run dir is written."""
    rng = np.random.default_rng(0)
    try:
        batch = sample(data.train, need, local_batch, rng)
    except ValueError as e:
        raise PretrainError(f"{_names(cfg)}: {e}") from e
    if need.kind == "pairs" and (valid := float(batch.valid.float().mean())) < MIN_VALID_PAIRS:
        print(f"warning: only {valid:.0%} of the sampled pairs are valid: delta_t={need.delta_t} reaches past the "
              "end of most episodes, so most pairs teach nothing. Use a smaller delta_t or longer episodes",
              file=sys.stderr)
    if data.val is not None:
        try:
            sample(data.val, need, local_batch, rng)
        except ValueError as e:
            raise PretrainError(
                f"{_names(cfg)}: the validation split (val_fraction={cfg.val_fraction}) is too small: {e}. "
                "Use a larger --val-fraction, a smaller batch, or --val-fraction 0."
            ) from e


@torch.no_grad()
def validate(
    objective: Objective, val: MultiTaskReplay, need: SamplingNeed, batch_size: int, cfg: PretrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Mean objective metrics on fixed held-out batches, as "val/<name>".

    Batches have the per-rank training size, so val accuracy (chance 1/batch) compares with ul/accuracy.
    """
    objective.eval()
    sums: dict[str, float] = {}
    for i in range(cfg.val_batches):
        rng = update_rng(cfg.seed, _VAL_TAG, i)
        with autocast(device, cfg.fast):
            _, metrics = objective.loss(sample(val, need, batch_size, rng).to(device))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.val_batches
    objective.train()
    return {"val/" + k.split("/", 1)[-1]: v for k, v in sums.items()}


def _checkpoint(out: Path, done: int, objective, optimizer, scheduler, cfg: PretrainConfig, dist: Dist) -> None:
    if not dist.is_main:
        return
    state = {"objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "update": done, "world_size": dist.world_size,
             "rng": rng_state()}
    save_rotating(out / CKPT_DIR, done, state, kind=KIND, config=cfg, keep=cfg.keep_checkpoints)


def _plain(value: Any) -> Any:
    return plain_config(value) if dataclasses.is_dataclass(value) else value


def _write_run_info(out: Path, cfg: PretrainConfig, settings: Settings, data: Data, dist: Dist,
                    fastpath: dict[str, Any] | None = None) -> None:
    """config.json; ``fastpath`` records what the fast path resolved to on this machine (bf16 or not, threads)."""
    info = {"kind": KIND, "config": plain_config(cfg), "encoder": settings.encoder, "in_shape": list(data.in_shape),
            "objective_config": _plain(settings.objective), "optim": plain_config(settings.optim),
            "tasks": data.tasks, "world_size": dist.world_size, "fastpath": fastpath,
            "train_steps": data.train.num_transitions,
            "val_steps": data.val.num_transitions if data.val is not None else 0}
    atomic_write(out / "config.json", lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))


class _Window:
    """Seconds spent on the updates between two log records, for perf/updates_per_s: the steps and the read of
    their metrics (which waits for the device), not validation or checkpoint writes."""

    def __init__(self) -> None:
        self.n = 0
        self.seconds = 0.0

    def add(self, seconds: float, *, updates: int = 1) -> None:
        self.n += updates
        self.seconds += seconds

    def flush(self) -> dict[str, float]:
        rate = self.n / self.seconds if self.seconds > 0 else 0.0
        self.__init__()
        return {"perf/updates_per_s": rate}


def main(argv: list[str] | None = None) -> int:
    """``python -m atcrl.train.pretrain`` (what torchrun runs with ``-m``)."""
    import tyro

    return run_pretrain(tyro.cli(PretrainConfig, args=argv, prog="atcrl pretrain"))


if __name__ == "__main__":
    raise SystemExit(main())
