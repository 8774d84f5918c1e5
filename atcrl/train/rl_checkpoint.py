"""What an `atcrl train` run directory holds, and how its checkpoints are written and read back.

    RUN_DIR/config.json        RunInfo: algo, preset, the resolved loop config, observation/action shapes
    RUN_DIR/checkpoints/       ckpt_<step>.pt: state dicts only (atcrl.checkpoint), the newest few kept
    RUN_DIR/metrics.jsonl|csv  metrics (MetricsLogger), tb/ TensorBoard, videos/, summary.json

A checkpoint's state: the run's own ``state_dict`` (agent with its optimizers and counters, UL
objective and optimizer, the run's sampling RNGs, step counters), the process RNGs (torch
augmentations, numpy), the envs' reset RNGs and, on request, the replay. Resuming at an episode
boundary with the replay saved therefore continues exactly as the uninterrupted run would have;
otherwise the episode in progress is cut and (without the replay) updates wait until the replay
holds a batch again.

Everything that acts from a finished run — evaluate, collect, export — goes through ``load_trained``,
which rebuilds the agent from config.json without making an env.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcrl.atomic import atomic_write
from atcrl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    plain_config,
    save_rotating,
)
from atcrl.jsonfile import read_json
from atcrl.nets.encoders import ConvEncoder
from atcrl.resumable import resumable_fields
from atcrl.train.algorithms import Algorithm, algorithm
from atcrl.train.overrides import config_from_plain

KIND = "train"
"""Checkpoint kind and config.json "kind" of RL runs (atcrl export dispatches on it)."""
RUN_INFO = "config.json"
CKPT_DIR = "checkpoints"


class TrainRunError(ValueError):
    """A run directory or checkpoint cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class RunInfo:
    """config.json of a train run: enough to rebuild its agent and its env without the checkpoint."""

    algo: str
    """The agent (a key of atcrl.train.algorithms.ALGORITHMS)."""
    preset: str
    loop: dict[str, Any]
    """The resolved SACLoopConfig / PPOLoopConfig as plain data."""
    train: dict[str, Any]
    """The TrainConfig the run was started with (as given, before resolution)."""
    encoder_arch: str
    obs_shape: tuple[int, ...]
    """Stacked observation [k * C, H, W]."""
    discrete: bool
    action_dim: int
    """Number of discrete actions (PPO) or size of the continuous action (SAC)."""
    frame_stack: int
    action_repeat: int
    kind: str = KIND
    history: list[dict[str, Any]] = field(default_factory=list)
    """Settings changed on resume with --allow-change: {"step", "allowed_changes": {loop path: [old, new]}}."""

    @property
    def algorithm(self) -> Algorithm:
        return algorithm(self.algo)

    def loop_config(self) -> Any:
        return config_from_plain(self.algorithm.config_cls, self.loop)

    def may_differ(self) -> tuple[str, ...]:
        """Loop fields a checkpoint of this run may record otherwise than config.json: the resumable ones
        (atcrl.resumable) and those changed on resume (``history``)."""
        changed = [path for entry in self.history for path in entry["allowed_changes"]]
        return (*resumable_fields(self.algorithm.config_cls), *changed)

    def checkpoint_config(self) -> dict[str, Any]:
        """What each checkpoint records as its config (compared field by field when resuming)."""
        return {"algo": self.algo, "preset": self.preset, **self.loop}

    def env_kwargs(self) -> dict[str, Any]:
        """make_env keywords reproducing the run's observations."""
        return {"image_size": self.loop["image_size"], "frame_stack": self.frame_stack,
                "action_repeat": self.action_repeat, "fast_render": bool(self.loop.get("fast_render", False))}


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    text = json.dumps(plain_config(info), indent=2) + "\n"
    atomic_write(run_dir / RUN_INFO, lambda f: f.write(text.encode()))


def read_run_info(run_dir: str | Path) -> RunInfo:
    """The RunInfo of a train run directory; TrainRunError when it is not one."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_INFO
    if not run_dir.is_dir():
        raise TrainRunError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise TrainRunError(f"{run_dir} is not a run directory: it has no {RUN_INFO}")
    data = read_json(path, TrainRunError)
    return run_info_from_dict(data, path)


def run_info_from_dict(data: Any, where: str | Path) -> RunInfo:
    if not isinstance(data, dict) or data.get("kind") != KIND:
        kind = data.get("kind", "pretrain") if isinstance(data, dict) else "?"
        raise TrainRunError(f"{where} describes a {kind!r} run, not an `atcrl train` run")
    try:
        return RunInfo(**{**data, "obs_shape": tuple(data["obs_shape"])})
    except (TypeError, KeyError) as e:
        raise TrainRunError(f"{where} is not a train run description this atcrl can read: {e}") from e


# --------------------------------------------------------------------------- env RNG state


def env_rng_state(env: Any) -> dict[str, Any]:
    """The RNGs an env draws its next reset from (gymnasium's np_random; dm_control's task RandomState)."""
    base = env.unwrapped
    state: dict[str, Any] = {"np_random": base.np_random.bit_generator.state}
    task = getattr(getattr(base, "_env", None), "task", None)  # dm_control draws initial states here
    if task is not None:
        name, keys, pos, has_gauss, gauss = task.random.get_state()
        state["task"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                         "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return state


def set_env_rng_state(env: Any, state: dict[str, Any]) -> None:
    """Restore ``env_rng_state``; the env's pending make-time seed is used up first so it cannot re-seed."""
    env.reset()  # consumes the seed given to make_env, which would otherwise override the restored state
    base = env.unwrapped
    base.np_random.bit_generator.state = state["np_random"]
    task = getattr(getattr(base, "_env", None), "task", None)
    if task is not None and "task" in state:
        t = state["task"]
        task.random.set_state((t["name"], t["keys"].numpy().astype(np.uint32), t["pos"], t["has_gauss"], t["gauss"]))


# --------------------------------------------------------------------------- checkpoints


def save(run_dir: Path, step: int, state: dict[str, Any], info: RunInfo, keep: int) -> Path:
    return save_rotating(run_dir / CKPT_DIR, step, state, kind=KIND, config=info.checkpoint_config(), keep=keep)


def load(run_dir: Path, info: RunInfo, *, which: str | Path | None = None):
    """The latest (or ``which``) checkpoint of a run, checked against its config.json."""
    path = Path(which) if which is not None else run_dir / CKPT_DIR
    if which is None and latest_checkpoint(path) is None:
        raise TrainRunError(f"{run_dir} holds no checkpoint yet (the run stopped before its first one)")
    return load_checkpoint(path, kind=KIND, config=info.checkpoint_config(), ignore=info.may_differ())


# --------------------------------------------------------------------------- a trained agent


@dataclass
class Trained:
    """An agent rebuilt from a run's checkpoint, with what is needed to make its env."""

    agent: Any
    """The run's agent (the algorithm's ``agent_cls``), weights loaded."""
    info: RunInfo
    checkpoint: Path
    step: int
    """Agent steps the run had taken at this checkpoint."""


def build_agent(info: RunInfo, device: str | torch.device = "cpu") -> Any:
    """A fresh agent of the run's architecture (conv + heads), ready for ``load_state_dict``.

    It runs on the run's fast path (layout, autocast); process-wide settings are the caller's.
    """
    encoder = ConvEncoder(info.encoder_arch, info.obs_shape)  # type: ignore[arg-type]
    return info.algorithm.build_agent(info.loop_config(), encoder, info.action_dim, device)


def load_run_checkpoint(run_or_checkpoint: str | Path) -> tuple[RunInfo, Any]:
    """(RunInfo, checkpoint) of a train run's latest checkpoint (a run directory) or of one checkpoint file in it."""
    path = Path(run_or_checkpoint)
    if not path.exists():
        raise TrainRunError(f"{path} does not exist (expected an `atcrl train` run directory or a checkpoint in it)")
    run_dir = path.parent.parent if path.is_file() else path
    info = read_run_info(run_dir)
    return info, load(run_dir, info, which=path if path.is_file() else None)


def load_trained(run_or_checkpoint: str | Path, device: str | torch.device = "cpu") -> Trained:
    """The agent of a train run's latest checkpoint (a run directory) or of one checkpoint file in it."""
    info, ckpt = load_run_checkpoint(run_or_checkpoint)
    agent = build_agent(info, device)
    agent.load_state_dict(ckpt.state["run"]["agent"])
    return Trained(agent, info, ckpt.path, int(ckpt.state["step"]))


def encoder_from_checkpoint(state: dict[str, Any], info: RunInfo) -> ConvEncoder:
    """The agent's (online) conv from a train checkpoint's state."""
    weights = state["run"]["agent"]["modules"]
    prefix = info.algorithm.encoder_key
    encoder = ConvEncoder(info.encoder_arch, info.obs_shape)  # type: ignore[arg-type]
    try:
        encoder.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's conv does not fit a {info.encoder_arch} encoder on "
                              f"{info.obs_shape}: {e}") from e
    return encoder


def describe(info: RunInfo) -> str:
    """E.g. "sac decoupled+atc": how the run's conv was trained (the exported encoder's "objective")."""
    loop = info.loop
    by_ul = info.algorithm.conv_trained_by_ul(loop)
    return f"{info.algo} {loop['mode']}" + (f"+{loop.get('ul', 'none')}" if by_ul else "")


def encoder_export(ckpt: Any, run_info: dict[str, Any]) -> tuple[ConvEncoder, str, list[str], dict[str, Any]]:
    """(conv, how it was trained, data, extra facts) of a train checkpoint, for `atcrl export`."""
    info = run_info_from_dict(run_info, ckpt.path)
    agent = ckpt.state["run"]["agent"]
    updates = agent[info.algorithm.updates_key]
    extra = {"steps": int(ckpt.state["step"]), "updates": int(updates), "preset": info.preset,
             "mode": info.loop["mode"], "seed": info.loop["seed"], "checkpoint": str(ckpt.path)}
    return encoder_from_checkpoint(ckpt.state, info), describe(info), [info.loop["env"]], extra
