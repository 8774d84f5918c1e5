"""`atcrl evaluate`: deterministic episodes of a trained agent, and episode videos.

    atcrl evaluate --run runs/dmc-atc-dmc-cartpole-swingup-0 --episodes 10 --video cartpole.gif

The same pieces serve `atcrl train` (periodic videos, PPO's periodic evaluation) and `atcrl collect`
(acting from a checkpoint): ``actor`` turns an agent into obs -> action, ``play`` runs episodes.
Videos show the agent's own observation (the newest frame of each stack), enlarged so small
images stay visible; .gif needs only Pillow, .mp4 needs imageio's ffmpeg plugin.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcrl.checkpoint import CheckpointError
from atcrl.output_guard import check_outputs
from atcrl.train.algorithms import Actor, after_step, algorithm_of, start_episode
from atcrl.train.rl_checkpoint import TrainRunError, load_trained

VIDEO_FPS = 25
VIDEO_MIN_SIDE = 256
"""Frames are enlarged by an integer factor until at least this many pixels wide."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Run deterministic episodes of a trained agent from its latest checkpoint."""

    run: str
    """Run directory of `atcrl train`."""
    episodes: int = 10
    """Episodes to run."""
    video: str | None = None
    """Write the first episode as a video here (.gif, or .mp4 with imageio's ffmpeg plugin)."""
    force: bool = False
    """Replace an existing --video file (a dataset's or a run's own files are never replaced)."""
    checkpoint: str | None = None
    """A checkpoint file of the run to evaluate instead of its latest."""
    seed: int = 12345
    """Seed of the evaluation env's resets."""
    device: str = "cpu"
    """Device for the agent ("cpu", "cuda", ...)."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")


def actor(agent: Any, *, explore: bool = False, generator: torch.Generator | None = None) -> Actor:
    """obs -> action for a trained agent: deterministic (SAC: tanh of the mean; PPO: argmax), or sampled."""
    return algorithm_of(agent).actor(agent, explore=explore, generator=generator)


def play(env: Any, act: Actor, episodes: int, *, record: int = 0, frame_channels: int = 3
         ) -> tuple[list[float], list[int], list[np.ndarray]]:
    """(returns, lengths, frames of the first ``record`` episodes as [H, W, C] uint8)."""
    returns, lengths, frames = [], [], []
    for e in range(episodes):
        obs, _ = env.reset()
        start_episode(act)
        total, length, done = 0.0, 0, False
        while True:
            if e < record:
                frames.append(obs[-frame_channels:].transpose(1, 2, 0))
            if done:
                break
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            after_step(act, float(reward))
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    return returns, lengths, frames


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = VIDEO_FPS) -> Path:
    """Write [H, W, C] uint8 frames (C 1 or 3) as a .gif or .mp4, enlarged to at least VIDEO_MIN_SIDE wide."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix not in (".gif", ".mp4"):
        raise ValueError(f"video {path} must end in .gif or .mp4")
    if not frames:
        raise ValueError("no frames to write")
    scale = max(1, -(-VIDEO_MIN_SIDE // frames[0].shape[1]))
    video = np.stack(frames).repeat(scale, axis=1).repeat(scale, axis=2)
    if video.shape[-1] == 1:
        video = video.repeat(3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.suffix == ".gif":
            iio.imwrite(path, video, duration=1000 / fps, loop=0)
        else:
            iio.imwrite(path, video, fps=fps)
    except (ImportError, OSError, ValueError) as e:
        path.unlink(missing_ok=True)
        raise ValueError(f"cannot write {path}: {e}. For .mp4 install imageio's ffmpeg plugin "
                         "(pip install 'imageio[ffmpeg]') or write a .gif instead") from e
    return path


def check_video_format(suffix: str) -> None:
    """Fail now, not at the first video hours later, when the container cannot be written here."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_video([np.zeros((8, 8, 3), np.uint8)] * 2, Path(tmp) / f"check{suffix}")


def run_evaluate(cfg: EvaluateConfig) -> int:
    """``atcrl evaluate``: prints mean ± std return; 0 on success, 2 on bad input."""
    from atcrl.envs import env_meta, make_env

    try:
        if cfg.video is not None:
            check_outputs([Path(cfg.video)], force=cfg.force, flag="--video")
        trained = load_trained(cfg.checkpoint or cfg.run, cfg.device)
        info = trained.info
        env = make_env(info.loop["env"], seed=cfg.seed, **info.env_kwargs())
        try:
            returns, lengths, frames = play(env, actor(trained.agent), cfg.episodes, record=int(cfg.video is not None),
                                            frame_channels=env_meta(env).frame_channels)
        finally:
            env.close()
        if cfg.video is not None:
            write_video(frames, cfg.video)
    except (TrainRunError, CheckpointError, ValueError, ImportError) as e:
        print(f"atcrl evaluate: error: {e}", file=sys.stderr)
        return 2
    print(f"{info.loop['env']} · {trained.checkpoint.name} (step {trained.step}) · {cfg.episodes} deterministic "
          f"episodes: return {np.mean(returns):.1f} ± {np.std(returns):.1f} (min {min(returns):.1f}, max "
          f"{max(returns):.1f}), length {np.mean(lengths):.0f}")
    if cfg.video is not None:
        print(f"video of the first episode: {cfg.video}")
    return 0
