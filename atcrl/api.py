"""atcrl's public Python API: the names in ``atcrl.__all__`` (documented in docs/api.md).

    import atcrl
    data = atcrl.collect("tiny:catch", episodes=20, out="data/catch")
    run_dir, encoder_path = atcrl.pretrain(data=data, updates=2000)
    encoder = atcrl.load_encoder(encoder_path)              # frozen, uint8 observations -> features
    env = atcrl.make_env("tiny:catch")
    features = encoder(env.reset(seed=0)[0])                # [encoder.feature_dim]

Everything else in the package may change between releases. Imports are deferred to the call,
so ``import atcrl`` stays cheap (no torch, no simulators).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import gymnasium as gym
    import numpy as np
    import torch

    from atcrl.pretrained import PretrainedEncoder

__all__ = ["Pretrained", "collect", "load_encoder", "make_env", "pretrain"]


def load_encoder(
    path: str | Path, freeze: bool = True, device: str | torch.device = "cpu", *,
    expect_in_shape: tuple[int, int, int] | None = None,
) -> PretrainedEncoder:
    """An exported encoder as an ``nn.Module``: uint8 observations in, float feature vectors out.

    path: what ``atcrl pretrain`` or ``atcrl export`` wrote: a directory holding encoder.safetensors +
        encoder.json, or either file.
    freeze: no gradients into the encoder (``requires_grad=False``, eval mode); False to fine-tune it.
    device: where its weights live; observations are moved there.
    expect_in_shape: refuse an encoder trained on another observation shape, e.g. ``env.observation_space.shape``.

    The module carries ``in_shape`` (the (frame_stack * C, H, W) it reads), ``obs_dtype`` (uint8),
    ``preprocessing``, ``feature_dim``, ``feature_shape`` and ``info`` (the export's description);
    ``encoder.latent(obs)`` returns conv feature maps instead of vectors.
    """
    from atcrl.pretrained import PretrainedEncoder

    return PretrainedEncoder.load(path, freeze=freeze, device=device, expect_in_shape=expect_in_shape)


class Pretrained(NamedTuple):
    """What ``pretrain`` returns."""

    run_dir: Path
    """The run directory: config.json, metrics, checkpoints."""
    encoder_path: Path | None
    """The exported encoder (run_dir/encoder.safetensors, with its .json); None when ``stop_after`` stopped early."""


def pretrain(
    data: str | Path | Sequence[str | Path], objective: str = "atc", *,
    objective_args: Mapping[str, Any] | Sequence[str] = (), **config: Any,
) -> Pretrained:
    """Pretrain an encoder offline on recorded episodes (what ``atcrl pretrain`` runs), then export it.

    data: one dataset directory (e.g. from ``collect``) or several (one multi-task encoder).
    objective: atc, ac, ats, cpc, stdim, vae, pixel-control, inverse or random.
    objective_args: the objective's own settings, e.g. ``{"latent_size": 64}``.
    config: any other field of ``atcrl.train.pretrain.PretrainConfig`` (the ``atcrl pretrain`` flags, with
        underscores): ``out``, ``updates``, ``batch_size``, ``preset``, ``seed``, ``device``, ``tensorboard`` ...
    Raises the pretraining error (a ValueError or CheckpointError naming the problem) instead of exiting.
    """
    from atcrl.train.pretrain import PretrainConfig, run_pretrain

    known = {f.name for f in dataclasses.fields(PretrainConfig)} - {"data", "objective", "objective_args"}
    if unknown := sorted(set(config) - known):
        raise TypeError(f"pretrain() has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}")
    if isinstance(objective_args, Mapping):
        objective_args = tuple(f"{k}={v}" for k, v in objective_args.items())
    paths = (data,) if isinstance(data, (str, Path)) else tuple(data)
    cfg = PretrainConfig(data=tuple(str(p) for p in paths), objective=objective,
                         objective_args=tuple(objective_args), **config)
    code = run_pretrain(cfg, raise_errors=True)
    if code == 130:
        raise KeyboardInterrupt(f"pretraining stopped with a checkpoint in {cfg.out}; resume with resume=True")
    run_dir = Path(cfg.out)
    encoder = run_dir / "encoder.safetensors"
    return Pretrained(run_dir, encoder if encoder.is_file() else None)


def make_env(spec: str, **options: Any) -> gym.Env:
    """A pixel env from a spec: "dmc:cartpole-swingup", "atari:Pong", "gym:MiniWorld-OneRoom-v0",
    "miniworld:FourRooms", "dmlab:explore_goal_locations_small", "tiny:point".

    Observations are uint8 [frame_stack * C, H, W], oldest frame first. options: ``seed`` (of the first
    reset), ``frame_stack``, ``action_repeat`` (None = the family's defaults), ``image_size`` (None = the
    family's frame, 84x84 or 72x96 for miniworld/dmlab; an int for a square frame; or (height, width)),
    ``fast_render`` (DMC only).
    """
    from atcrl.envs import make_env as make

    return make(spec, **options)


def collect(
    env: str, episodes: int, out: str | Path, *,
    policy: Callable[[np.ndarray, np.random.Generator], Any] | None = None,
    seed: int = 0, image_size: int | tuple[int, int] | None = None, append: bool = False, progress: bool = False,
    **options: Any,
) -> Path:
    """Record ``episodes`` episodes of ``policy`` in env ``env`` into a new dataset directory ``out``.

    policy: ``(observation, rng) -> action``; None plays uniform random actions. Episode k is seeded from
        (seed, k), so the dataset is reproducible. append: add to an existing dataset of the same env.
    options: ``max_steps``, ``frame_stack``, ``action_repeat``, ``fast_render`` (as ``atcrl collect``).
    Returns ``out``, ready for ``pretrain(data=out)``.
    """
    from atcrl.train.collect import collect_episodes, random_policy

    name = "custom"
    if policy is None:
        probe = make_env(env, image_size=image_size)
        try:
            policy, name = random_policy(probe.action_space), "random"
        finally:
            probe.close()
    return collect_episodes(env, episodes, policy, out=out, seed=seed, image_size=image_size, append=append,
                            progress=progress, policy_name=name, **options)
