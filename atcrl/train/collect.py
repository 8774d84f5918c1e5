"""Record episodes of a policy acting in an env into an atcrl dataset.

    atcrl collect --env dmc:cartpole-swingup --episodes 20 --out data/cartpole --policy random
    atcrl collect --checkpoint runs/dmc-atc-dmc-cartpole-swingup-0 --episodes 20 --out data/expert
    atcrl collect --checkpoint runs/atari-dqn-atari-Pong-0 --whole-replay --out data/dqn-replay

Each episode is written as soon as it ends (one atomically renamed file), so an interrupted run
loses at most the episode in progress. Episode k of a task is always played with seeds derived
from (seed, k): re-running the same command with ``--append`` keeps the episodes already on disk
and records only the missing ones, and the result equals what the uninterrupted run would have
written. ``--episodes`` is therefore the number of episodes of that task the dataset should hold.

``--whole-replay`` instead writes the replay a run trained on (saved in its checkpoint with
``atcrl train --checkpoint-replay``) as the dataset: every transition still in it, in order, with its
episode boundaries (``write_whole_replay``).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from atcrl.data.dataset import DatasetError, DatasetWriter, episode_files, meta_from_env, read_meta
from atcrl.data.episode import Episode
from atcrl.envs import env_meta, make_env
from atcrl.envs.registry import ImageSize
from atcrl.progress import Progress

Policy = Callable[[np.ndarray, np.random.Generator], Any]
"""(stacked uint8 observation [k * C, H, W], rng) -> action: an int for discrete envs, a float array otherwise."""


class CollectError(ValueError):
    """Collection cannot start as asked; the message says why."""


@dataclass(frozen=True)
class CollectConfig:
    """Record episodes of a policy into an atcrl dataset (one file per finished episode)."""

    out: str
    """Dataset directory (created; must be empty unless --append)."""
    episodes: int | None = None
    """Episodes of this task the dataset should hold; with --append, those already there count. Required
    unless --whole-replay."""
    env: str | None = None
    """Env spec, e.g. dmc:cartpole-swingup, atari:Pong, tiny:point (see `atcrl envs`); with --checkpoint,
    None = the trained run's env."""
    policy: Literal["random"] = "random"
    """Acting policy when no --checkpoint is given: "random" draws uniform actions."""
    checkpoint: str | None = None
    """An `atcrl train` run directory (its latest checkpoint) or checkpoint file: act with that agent."""
    explore: bool = False
    """With --checkpoint: sample from the agent's policy (its exploration) instead of acting deterministically."""
    seed: int = 0
    """Seed of every episode's env reset and policy randomness (episode k uses (seed, k))."""
    image_size: int | None = None
    """Side of the square frames in pixels; None = the env family's own frame (84x84; 72x96 for miniworld and
    dmlab), or the trained run's with --checkpoint."""
    fast_render: bool = False
    """DMC: no shadows, reflections or multisampling (faster; pixels differ from the default rendering).
    With --checkpoint, on when the run was trained with it."""
    max_steps: int | None = None
    """Cut episodes after this many agent steps (recorded as truncated); None = the env's own limit."""
    append: bool = False
    """Add to an existing dataset: keep its episodes and record only the missing ones."""
    whole_replay: bool = False
    """With --checkpoint: write the run's training replay as the dataset instead of playing new episodes: every
    transition still in it, oldest first, as episodes with their boundaries (one replay after another for
    agents with one per env, e.g. DQN). The run must have been trained with `atcrl train --checkpoint-replay`.
    A replay that wrapped starts mid-episode: those leading steps are dropped (their count is in meta.json);
    the episode in progress at the checkpoint is written as truncated. Rewards are the env's raw rewards."""

    def __post_init__(self) -> None:
        if self.whole_replay:
            if self.checkpoint is None:
                raise ValueError("--whole-replay writes a trained run's replay: give --checkpoint RUN")
            if self.episodes is not None or self.append or self.explore or self.max_steps is not None:
                raise ValueError("--whole-replay writes what the replay holds: drop --episodes, --append, "
                                 "--explore and --max-steps")
            return
        if self.episodes is None or self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes} (or pass --whole-replay with --checkpoint)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.env is None and self.checkpoint is None:
            raise ValueError("give --env (or --checkpoint, whose run names its env)")


# --------------------------------------------------------------------------- policies


def random_policy(space: gym.Space) -> Policy:
    """Uniform actions from ``space`` (Discrete or Box), drawn from the rng the collector passes."""
    if isinstance(space, gym.spaces.Discrete):
        n, start = int(space.n), int(space.start)
        return lambda obs, rng: start + int(rng.integers(n))
    if isinstance(space, gym.spaces.Box):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise CollectError(f"a uniform random policy needs a bounded Box action space, got {space}")
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        return lambda obs, rng: rng.uniform(low, high).astype(np.float32)
    raise CollectError(f"no random policy for action space {space} (only Discrete and Box)")


def _load_trained(checkpoint: str | Path) -> Any:
    from atcrl.checkpoint import CheckpointError
    from atcrl.train.rl_checkpoint import TrainRunError, load_trained

    try:
        return load_trained(checkpoint)
    except (TrainRunError, CheckpointError) as e:
        raise CollectError(f"cannot collect with checkpoint {checkpoint}: {e}") from e


def _trained_policy(trained: Any, explore: bool) -> Policy:
    import torch

    from atcrl.train.evaluate import actor

    if not explore:
        return TrainedPolicy(actor(trained.agent), None)
    noise = torch.Generator()
    return TrainedPolicy(actor(trained.agent, explore=True, generator=noise), noise)


class TrainedPolicy:
    """A trained agent's actor as a ``Policy``; ``reset`` and ``rewarded`` reach an actor with memory
    (``EpisodicActor``). With ``noise`` (exploring), each step's sampling is seeded from the collector's rng."""

    def __init__(self, act: Any, noise: Any):
        self.act, self.noise = act, noise

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> Any:
        if self.noise is not None:
            self.noise.manual_seed(int(rng.integers(2**62)))
        return self.act(obs)

    def reset(self) -> None:
        from atcrl.train.algorithms import start_episode

        start_episode(self.act)

    def rewarded(self, reward: float) -> None:
        from atcrl.train.algorithms import after_step

        after_step(self.act, reward)


# --------------------------------------------------------------------------- recording


def _episode_seeds(seed: int, k: int) -> tuple[int, np.random.Generator]:
    """(env reset seed, policy rng) of episode k: a function of (seed, k) only, so resuming reproduces them."""
    env_seq, policy_seq = np.random.SeedSequence([seed, k]).spawn(2)
    return int(env_seq.generate_state(1)[0]), np.random.default_rng(policy_seq)


def record_episode(
    env: gym.Env, policy: Policy, *, reset_seed: int, rng: np.random.Generator, frame_channels: int,
    discrete: bool, with_physics: bool, task: str, max_steps: int | None = None,
) -> Episode:
    """Play one episode; keep the newest frame of each observation (stacks are rebuilt at read time)."""
    from atcrl.train.algorithms import after_step, start_episode

    obs, info = env.reset(seed=reset_seed)
    start_episode(policy)
    frames, physics, actions, rewards = [obs[-frame_channels:]], [info.get("physics")], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = policy(obs, rng)
        obs, reward, terminated, truncated, info = env.step(action)
        after_step(policy, float(reward))
        frames.append(obs[-frame_channels:])
        physics.append(info.get("physics"))
        actions.append(action)
        rewards.append(reward)
        if max_steps is not None and len(actions) >= max_steps and not terminated:
            truncated = True
    if with_physics and any(p is None for p in physics):
        raise CollectError(f"{task} stopped reporting info['physics'] mid-episode; cannot record its state")
    action_array = (np.asarray(actions, np.int64) if discrete
                    else np.asarray(actions, np.float32).reshape(len(actions), *env.action_space.shape))
    return Episode(
        frames=np.stack(frames), actions=action_array, rewards=np.asarray(rewards, np.float32),
        terminated=bool(terminated), truncated=bool(truncated),
        physics=np.stack(physics).astype(np.float64) if with_physics else None, task=task,
    )


def collect_episodes(
    spec: str, n_episodes: int, policy: Policy, *, out: str | Path, seed: int = 0, image_size: ImageSize = None,
    fast_render: bool = False, append: bool = False, progress: bool = True, max_steps: int | None = None,
    policy_name: str = "custom", frame_stack: int | None = None, action_repeat: int | None = None,
) -> Path:
    """Record episodes of ``policy`` in env ``spec`` until ``out`` holds ``n_episodes`` of that task.

    Returns the dataset directory. Without ``append`` the directory must be new (or empty); with it,
    episodes already recorded for this task are kept and count towards ``n_episodes``.
    frame_stack / action_repeat: None = the env family's defaults (a trained agent needs its run's).
    """
    if n_episodes < 1:
        raise CollectError(f"n_episodes must be >= 1, got {n_episodes}")
    out = Path(out)
    env = make_env(spec, seed=seed, image_size=image_size, fast_render=fast_render, frame_stack=frame_stack,
                   action_repeat=action_repeat)
    try:
        info = env_meta(env)
        notes = {"policy": policy_name, "seed": seed, "fast_render": fast_render}
        meta = meta_from_env(env, extra={"collect": notes})
        if append:
            _check_same_rendering(out, fast_render)
        try:
            writer = DatasetWriter(out, meta, append=append)
        except DatasetError as e:
            hint = "" if append else " (pass --append to add to it)"
            raise CollectError(f"{e}{hint}") from e
        done = _episodes_of_task(out, info.spec)
        if done >= n_episodes:
            print(f"{out} already holds {done} episodes of {info.spec}; nothing to record", file=sys.stderr)
            return out
        bar = Progress(n_episodes, initial=done, desc=f"collect {info.spec}", show=("return", "steps"),
                       enabled=progress, interval=10.0, unit="episode")
        with bar:
            for k in range(done, n_episodes):
                reset_seed, rng = _episode_seeds(seed, k)
                episode = record_episode(
                    env, policy, reset_seed=reset_seed, rng=rng, frame_channels=info.frame_channels,
                    discrete=info.discrete, with_physics=info.physics_dim is not None, task=info.spec,
                    max_steps=max_steps,
                )
                writer.add(episode)
                bar.update(1, {"return": float(episode.rewards.sum()), "steps": len(episode)})
    finally:
        env.close()
    return out


def _episodes_of_task(root: Path, task: str) -> int:
    from atcrl.data.dataset import read_array

    return sum(str(read_array(path, "task")) == task for _, path in episode_files(root))


def _check_same_rendering(root: Path, fast_render: bool) -> None:
    """Refuse to mix fast and default DMC rendering in one dataset: the pixels differ."""
    if not (root / "meta.json").exists():
        return
    stored = read_meta(root).extra.get("collect", {})
    if "fast_render" in stored and bool(stored["fast_render"]) != fast_render:
        raise CollectError(
            f"{root} was recorded with fast_render={stored['fast_render']}; appending with "
            f"fast_render={fast_render} would mix two renderings. Pass the same --fast-render setting."
        )


# --------------------------------------------------------------------------- CLI


def run_collect(cfg: CollectConfig) -> int:
    """``atcrl collect``: exit code 0 on success, 2 on bad input (the message says what)."""
    try:
        env_kwargs: dict[str, Any] = {"image_size": cfg.image_size, "fast_render": cfg.fast_render}
        spec = cfg.env
        start = time.perf_counter()
        if cfg.whole_replay:
            out = write_whole_replay(cfg.checkpoint, cfg.out, env=cfg.env)
        elif cfg.checkpoint is not None:
            trained = _load_trained(cfg.checkpoint)
            spec = cfg.env if cfg.env is not None else trained.info.loop["env"]
            env_kwargs = _trained_env(cfg, spec, trained)
            policy = _trained_policy(trained, cfg.explore)
            name = f"checkpoint:{cfg.checkpoint}" + (" (explore)" if cfg.explore else "")
        else:
            policy, name = random_policy(_action_space(spec, env_kwargs)), cfg.policy
        if not cfg.whole_replay:
            out = collect_episodes(spec, cfg.episodes, policy, out=cfg.out, seed=cfg.seed, append=cfg.append,
                                   max_steps=cfg.max_steps, policy_name=name, **env_kwargs)
    except (CollectError, DatasetError, ValueError, ImportError) as e:
        print(f"atcrl collect: error: {e}", file=sys.stderr)
        return 2
    print(f"dataset {out} ({time.perf_counter() - start:.1f} s); inspect it with "
          f"`atcrl dataset info {shlex.quote(str(out))}`", file=sys.stderr)
    return 0


def write_whole_replay(checkpoint: str | Path, out: str | Path, *, env: str | None = None,
                       progress: bool = True) -> Path:
    """Write the replay(s) saved in a train run's checkpoint (``atcrl train --checkpoint-replay``) as a dataset
    at ``out`` (a new or empty directory): ``atcrl.data.replay.episodes_of_state`` of each replay, in the
    replays' order. ``env`` names the task the episodes are labelled with (None = the run's env)."""
    from atcrl.checkpoint import CheckpointError
    from atcrl.data.replay import episodes_of_state
    from atcrl.train.rl_checkpoint import TrainRunError, load_run_checkpoint

    try:
        info, ckpt = load_run_checkpoint(checkpoint)
    except (TrainRunError, CheckpointError) as e:
        raise CollectError(f"cannot read the replay of {checkpoint}: {e}") from e
    saved = ckpt.state.get("replay")
    if saved is None:
        raise CollectError(f"{ckpt.path} holds no replay: train the run with `atcrl train --checkpoint-replay` "
                           "to write its whole replay, or record new episodes with --episodes N")
    replays = saved if isinstance(saved, list) else [saved]
    made = make_env(env or info.loop["env"], **info.env_kwargs())
    try:
        meta = meta_from_env(made)
    finally:
        made.close()
    frames = replays[0]["frames"]
    if tuple(frames.shape[1:]) != meta.frame_shape or str(frames.dtype) != "torch.uint8":
        raise CollectError(f"the replay of {ckpt.path} stores {tuple(frames.shape[1:])} {frames.dtype} entries, not "
                           f"the env's {meta.frame_shape} uint8 frames (a latent replay?); it cannot be a dataset")
    physics = "physics" in replays[0]
    notes = {"policy": f"whole-replay:{ckpt.path}", "step": int(ckpt.state["step"]), "replays": len(replays)}
    episodes, dropped = [], []
    for state in replays:
        eps, lost = episodes_of_state(state, task=meta.tasks[0])
        episodes += eps
        dropped.append(lost)
    notes["dropped_leading_slots"] = dropped  # per replay: the partial episode a wrapped ring started with
    meta = replace(meta, physics_dim=meta.physics_dim if physics else None, extra={"collect": notes})
    try:
        writer = DatasetWriter(out, meta)
    except DatasetError as e:
        raise CollectError(str(e)) from e
    bar = Progress(len(episodes), desc=f"whole replay {meta.tasks[0]}", show=("steps",), enabled=progress,
                   interval=10.0, unit="episode")
    with bar:
        for episode in episodes:
            writer.add(episode)
            bar.update(1, {"steps": len(episode)})
    writer.close()
    return Path(out)


def _trained_env(cfg: CollectConfig, spec: str, trained: Any) -> dict[str, Any]:
    """make_env keywords giving the trained agent the observations it was trained on."""
    info = trained.info
    kwargs = info.env_kwargs()
    if cfg.image_size is not None and cfg.image_size != kwargs["image_size"]:
        raise CollectError(f"the agent of {cfg.checkpoint} was trained on {kwargs['image_size']} px images; "
                           f"--image-size {cfg.image_size} would give it observations it cannot read")
    kwargs["fast_render"] = kwargs["fast_render"] or cfg.fast_render
    if spec != info.loop["env"]:  # another task: only its observation and action layout must agree
        env = make_env(spec, **kwargs)
        try:
            shape, space = tuple(env.observation_space.shape), env.action_space
        finally:
            env.close()
        actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape))
        if shape != info.obs_shape or actions != info.action_dim:
            raise CollectError(f"the agent of {cfg.checkpoint} reads {info.obs_shape} observations and acts with "
                               f"{info.action_dim} action(s); {spec} gives {shape} and {actions}")
    return kwargs


def _action_space(spec: str, env_kwargs: dict[str, Any]) -> gym.Space:
    # Building an env does not render or step it, so this costs only the model load.
    env = make_env(spec, **env_kwargs)
    try:
        return env.action_space
    finally:
        env.close()
