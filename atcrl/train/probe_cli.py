"""``atcrl probe``: how much of the physics state an encoder's features hold, on held-out episodes.

    atcrl probe --encoder runs/atc/encoder.safetensors --data data/cartpole
    atcrl probe --encoder runs/atc/encoder.safetensors --data data/cartpole --baseline random
    atcrl probe --encoder random --arch dmc --seed 0 --data data/cartpole      # the baseline alone

Each task is probed on its own (one ridge fit per task; physics vectors differ between tasks).
Episodes, not frames, are split into train and test, so test frames come from episodes the probe
never fitted. The split depends only on --split-seed, so two encoders probed with the same data
and split seed are scored on the same episodes.

Targets are the physics state with every hinge angle of a dmc:* task as its (sin, cos) pair
(probe_targets.py); each R² comes with a bootstrap 95% interval over the test episodes (whole
episodes are resampled, not frames). --baseline random scores a random encoder of the same
architecture on the same split and frames, printed beside it in one table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from atcrl.atomic import atomic_write
from atcrl.checkpoint import CheckpointError
from atcrl.data.dataset import DatasetError, EpisodeDataset, open_datasets
from atcrl.device import resolve_device
from atcrl.encoder_io import encoder_info, load_encoder
from atcrl.nets.encoders import ConvEncoder, EncoderName
from atcrl.output_guard import OutputError, check_outputs
from atcrl.progress import Progress
from atcrl.train.probe import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_ALPHAS,
    ProbeResult,
    encode_episodes,
    linear_probe,
    split_episodes,
)
from atcrl.train.probe_targets import targets_of
from atcrl.ul.random_encoder import seeded_init

RANDOM = "random"


class ProbeError(ValueError):
    """The probe cannot run on these inputs; the message says why."""


@dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe an encoder: R² of each physics-state dimension from its features, on held-out episodes."""

    encoder: str
    """An exported encoder (directory, .safetensors or .json from `atcrl pretrain` / `atcrl export`), or
    "random" for an untrained encoder of --arch drawn from --seed."""
    data: tuple[str, ...]
    """Dataset directories with physics state (e.g. recorded from dmc:* or tiny:* envs)."""
    arch: EncoderName = "dmc"
    """Architecture of the random encoder (ignored for an exported encoder, which records its own)."""
    seed: int = 0
    """Seed of the random encoder's weights (the same seed gives `atcrl pretrain --objective random`'s)."""
    split_seed: int = 0
    """Seed of the train/test split of each task's episodes."""
    test_fraction: float = 0.25
    """Fraction of each task's episodes held out for scoring (at least one)."""
    max_frames: int = 20_000
    """Encode at most this many frames per task, spread evenly over its episodes. Memory is about
    2.5 x frames x features x 8 bytes: ~30 KB a frame for the DMC conv at 84 px (1,568 features),
    ~60 KB for the Atari conv (3,136), so the default stays under ~1.3 GB."""
    batch_size: int = 256
    """Frames per encoder forward pass."""
    device: str = "cpu"
    """"cpu", "cuda", "cuda:N" or "auto"."""
    out: str | None = None
    """Also write the results as JSON to this file (checked before the probe runs)."""
    force: bool = False
    """Replace an existing --out file (a dataset's or a run's own files are never replaced)."""
    skip_corrupt: bool = False
    """Leave out episode files that are damaged or hold NaN/Inf (each is named on stderr) instead of stopping."""
    baseline: Literal["random"] | None = None
    """"random": also probe an untrained encoder of the same architecture and input shape, weights from --seed,
    on the same episodes and frames, and print its R² beside the encoder's in one table."""

    def __post_init__(self) -> None:
        if self.baseline is not None and self.baseline != RANDOM:
            raise ValueError(f"--baseline must be {RANDOM!r} (or left out), got {self.baseline!r}")
        if self.baseline == RANDOM and self.encoder == RANDOM:
            raise ValueError("--baseline random compares an encoder with a random one; --encoder is random already")
        if not self.data:
            raise ValueError("give at least one dataset directory with --data")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.max_frames < 4 or self.batch_size < 1:
            raise ValueError(f"max_frames must be >= 4 and batch_size >= 1, got {self.max_frames}, {self.batch_size}")


@dataclass(frozen=True)
class TaskProbe:
    """The probe of one task."""

    task: str
    targets: tuple[str, ...]
    """Name of each scored target, e.g. "hinge_1.sin"; physics[i] where the env names none."""
    result: ProbeResult
    baseline: ProbeResult | None
    """The --baseline encoder's probe on the same split and frames."""
    train_episodes: int
    test_episodes: int
    frames_fraction: float
    """Fraction of the task's frames that were encoded (below 1 when --max-frames subsampled them)."""


# --------------------------------------------------------------------------- inputs


def open_probe_data(
    paths: tuple[str, ...], *, skip_corrupt: bool = False
) -> tuple[list[EpisodeDataset], tuple[int, int, int]]:
    """Open the datasets, check they have physics and one observation layout; return it (k*C, H, W)."""
    datasets = open_datasets(paths, skip_corrupt=skip_corrupt, command="probe")
    shapes = {}
    for ds in datasets:
        if ds.meta.physics_dim is None:
            raise ProbeError(
                f"dataset {ds.path} has no physics state (physics_dim is null in its meta.json); a probe "
                "regresses the physics state, so record the data from an env that reports it (dmc:*, tiny:*)"
            )
        c, h, w = ds.meta.frame_shape
        shapes[ds.path] = (ds.meta.frame_stack * c, h, w)
    if len(set(shapes.values())) > 1:
        listed = "; ".join(f"{p}: {s}" for p, s in shapes.items())
        raise ProbeError(f"the datasets have different observation shapes (frame stack x channels, H, W): {listed}")
    return datasets, next(iter(shapes.values()))


def random_encoder(arch: EncoderName, obs_shape: tuple[int, int, int], seed: int) -> tuple[ConvEncoder, str]:
    """An untrained encoder drawn from ``seed`` (what `atcrl pretrain --objective random` exports) and its
    description."""
    try:
        encoder = ConvEncoder(arch, obs_shape)
    except ValueError as e:
        raise ProbeError(f"random encoder for observations {obs_shape}: {e}") from e
    encoder.load_state_dict(seeded_init(encoder, seed))
    return encoder, f"random {arch} encoder (seed {seed})"


def build_encoder(cfg: ProbeConfig, obs_shape: tuple[int, int, int]) -> tuple[ConvEncoder, str]:
    """The encoder to probe and a one-line description of it."""
    if cfg.encoder == RANDOM:
        return random_encoder(cfg.arch, obs_shape, cfg.seed)
    try:
        info = encoder_info(cfg.encoder)
        encoder = load_encoder(cfg.encoder)
    except (CheckpointError, ValueError) as e:
        raise ProbeError(str(e)) from e
    if encoder.in_shape != obs_shape:
        raise ProbeError(
            f"encoder {cfg.encoder} takes observations of shape {encoder.in_shape}, but the data gives "
            f"{obs_shape} (frame stack x channels, height, width); probe it on data recorded like its training data"
        )
    return encoder, f"{info['arch']} encoder trained with {info.get('objective', '?')} ({cfg.encoder})"


def subsample(lengths: list[int], max_frames: int) -> list[np.ndarray]:
    """Per episode, the frame indices to keep: all, or ``max_frames`` spread evenly over all frames."""
    total = sum(lengths)
    if total <= max_frames:
        return [np.arange(n) for n in lengths]
    keep = np.unique(np.linspace(0, total - 1, max_frames).round().astype(np.int64))
    starts = np.cumsum([0, *lengths])
    return [keep[(keep >= a) & (keep < b)] - a for a, b in pairwise(starts)]


def tasks_of(datasets: list[EpisodeDataset]) -> dict[str, list[tuple[EpisodeDataset, int]]]:
    by_task: dict[str, list[tuple[EpisodeDataset, int]]] = {}
    for ds in datasets:
        for i, s in enumerate(ds.summaries):
            by_task.setdefault(s.task or ds.path.name, []).append((ds, i))
    return by_task


# --------------------------------------------------------------------------- the probe


def probe_task(
    encoder: ConvEncoder, task: str, items: list[tuple[EpisodeDataset, int]], cfg: ProbeConfig,
    device: torch.device, baseline: ConvEncoder | None = None,
) -> TaskProbe:
    try:
        train_ids, test_ids = split_episodes(len(items), cfg.test_fraction, cfg.split_seed)
    except ValueError as e:
        raise ProbeError(f"task {task}: {e}; record more episodes") from e
    frame_stack = items[0][0].meta.frame_stack
    lengths = [items[i][0].summaries[items[i][1]].steps + 1 for i in range(len(items))]
    times = subsample(lengths, cfg.max_frames)
    total = sum(len(t) for t in times)
    encoders = [encoder] if baseline is None else [encoder, baseline]
    bar = Progress(total * len(encoders), desc=f"encode {task}", interval=10.0, unit="frame")
    physics_task = items[0][0].summaries[items[0][1]].task
    try:
        targets = targets_of(physics_task, int(items[0][0].meta.physics_dim or 0))
    except ValueError as e:
        raise ProbeError(f"task {task}: {e}") from e
    test_lengths = [n for i in test_ids if (n := len(times[i])) > 0]

    def encode(net: ConvEncoder, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        episodes = (items[i][0][items[i][1]] for i in ids)  # loaded from disk one at a time
        feats, physics = encode_episodes(net, episodes, frame_stack, batch_size=cfg.batch_size, device=device,
                                         times=[times[i] for i in ids], progress=bar.update)
        return feats, targets.apply(physics)

    try:
        results = []
        with bar:
            for net in encoders:
                train, test = encode(net, train_ids), encode(net, test_ids)
                results.append(linear_probe(train, test, test_lengths=test_lengths))
    except ValueError as e:  # e.g. --max-frames left a split without frames
        raise ProbeError(f"task {task}: {e} (train episodes {len(train_ids)}, test {len(test_ids)}, "
                         f"frames kept {total} of {sum(lengths)}; raise --max-frames)") from e
    return TaskProbe(task, targets.names, results[0], results[1] if baseline is not None else None,
                     len(train_ids), len(test_ids), total / sum(lengths))


def run_probe(cfg: ProbeConfig) -> int:
    """``atcrl probe``: 0 on success, 2 on bad input (the message says what)."""
    try:
        if cfg.out is not None:
            check_outputs([Path(cfg.out)], force=cfg.force)
        datasets, obs_shape = open_probe_data(cfg.data, skip_corrupt=cfg.skip_corrupt)
        encoder, described = build_encoder(cfg, obs_shape)
        baseline, baseline_described = (None, None) if cfg.baseline is None else \
            random_encoder(encoder.arch, encoder.in_shape, cfg.seed)
        try:
            device = resolve_device(cfg.device)
        except ValueError as e:
            raise ProbeError(str(e)) from e
        probes = [probe_task(encoder, task, items, cfg, device, baseline)
                  for task, items in tasks_of(datasets).items()]
    except (ProbeError, DatasetError, OutputError) as e:
        print(f"atcrl probe: error: {e}", file=sys.stderr)
        return 2
    print(report(described, probes, baseline_described))
    if cfg.out is not None:
        body = {"encoder": cfg.encoder, "described": described, "data": [str(d.path) for d in datasets],
                "config": asdict(cfg), "alphas": list(DEFAULT_ALPHAS), "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
                **summary(probes, lambda p: p.result)}
        if baseline_described is not None:
            body["baseline"] = {"described": baseline_described, **summary(probes, lambda p: p.baseline)}
        atomic_write(cfg.out, lambda f: f.write((json.dumps(body, indent=2) + "\n").encode()))
        print(f"wrote {Path(cfg.out)}", file=sys.stderr)
    return 0


def summary(probes: list[TaskProbe], result: Callable[[TaskProbe], ProbeResult | None]) -> dict[str, Any]:
    """The JSON of one encoder's probes: the mean over tasks, and per task its targets, R², intervals and split."""
    tasks = {}
    for p in probes:
        r = result(p)
        assert r is not None
        tasks[p.task] = {**asdict(r), "targets": list(p.targets), "mean_r2": r.mean_r2,
                         "train_episodes": p.train_episodes, "test_episodes": p.test_episodes,
                         "frames_fraction": p.frames_fraction}
    return {"mean_r2": float(np.mean([t["mean_r2"] for t in tasks.values()])), "tasks": tasks}


def _r2_text(value: float, ci: tuple[float, float] | None) -> str:
    return f"{value:7.3f}" + (f" [{ci[0]:7.3f}, {ci[1]:7.3f}]" if ci is not None else "")


def report(described: str, probes: list[TaskProbe], baseline: str | None = None) -> str:
    """Per task, one row per target: R² with its 95% interval over test episodes, and the baseline's beside it."""
    lines = [f"linear probe of the {described}" + (f", beside the {baseline}" if baseline else "")]
    for p in probes:
        r, b = p.result, p.baseline
        sub = f", {p.frames_fraction:.0%} of frames" if p.frames_fraction < 1 else ""
        lines.append(f"task {p.task}: {p.train_episodes} train / {p.test_episodes} test episodes "
                     f"({r.n_train} / {r.n_test} frames{sub}), ridge alpha {r.alpha:g}"
                     + (f" (baseline {b.alpha:g})" if b else ""))
        width = max(len(n) for n in (*p.targets, "mean"))
        lines.append(f"  {'target':<{width}}  R^2 [95% interval over {r.resampled_episodes} test episodes]"
                     + ("   baseline R^2 [95% interval]" if b else ""))
        for i, name in enumerate((*p.targets, "mean")):
            rows = [(x.r2[i], x.r2_ci[i] if x.r2_ci else None) if i < len(x.r2) else (x.mean_r2, x.mean_r2_ci)
                    for x in (r, b) if x is not None]
            lines.append(f"  {name:<{width}}  " + "   ".join(_r2_text(v, ci) for v, ci in rows))
    if len(probes) > 1:
        means = [np.mean([p.result.mean_r2 for p in probes])]
        if probes[0].baseline is not None:
            means.append(np.mean([p.baseline.mean_r2 for p in probes if p.baseline is not None]))
        lines.append("mean over tasks R^2 " + " (baseline ".join(f"{m:.3f}" for m in means) + ")" * (len(means) - 1))
    return "\n".join(lines)
