"""One `atcrl train` process: build or restore the run, drive its loop, and hook in logging, progress,
evaluation (for loops that do not evaluate themselves), videos, checkpoints and the closing summary. What
differs between agents comes from the run's ``Algorithm`` (atcrl.train.algorithms).

PPO evaluation and video episodes (this module's) end at ``EVAL_MAX_ENV_FRAMES``; an episode cut there is
logged in ``eval/truncated``. The summary records the fast path this session resolved to (``fastpath``)
and what it applied to the process (``process``); ``perf/replay_bytes`` is logged once per session.

Checkpoints are written only at the loops' safe points, i.e. between agent steps (PPO: iterations), when
the run's state is consistent: one at every ``--ckpt-every`` multiple, and one when the session stops
(Ctrl-C stops after the current step). A NaN/inf loss raises inside the loop before any callback, so the
newest checkpoint on disk is always from before the divergence.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from atcrl.atomic import atomic_write
from atcrl.checkpoint import latest_checkpoint, plain_config, rng_state, set_rng_state
from atcrl.fastpath import describe
from atcrl.metrics_log import MetricsLogger
from atcrl.nets.encoders import ConvEncoder
from atcrl.progress import Progress
from atcrl.runlock import hold_dir_lock
from atcrl.train import rl_checkpoint as ckpts
from atcrl.train.algorithms import Algorithm
from atcrl.train.evaluate import actor, play, write_video
from atcrl.train.interrupt import StopOnCtrlC
from atcrl.train.rl_checkpoint import RunInfo
from atcrl.train.train_plan import Plan, Resumed, retry_command

SHOW = ("eval/return_mean", "rl/episode_return", "perf/steps_per_s")
"""Metrics the progress display keeps up to date."""

EVAL_MAX_ENV_FRAMES = 18_000
"""Longest evaluation or video episode, in underlying env steps (Atari: emulator frames): 5 minutes of play
at 60 Hz, the usual bound of Atari evaluations (4500 agent steps at frame skip 4). Without it a barely trained
greedy policy that never presses FIRE plays to the env's own limit, 27k agent steps per episode. DMC (1000
steps) and the tiny envs end well before it."""


class EpisodeCap(gym.Wrapper):
    """Ends an episode as truncated after ``max_steps`` agent steps, and counts the episodes it cut."""

    def __init__(self, env: gym.Env, max_steps: int):
        super().__init__(env)
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self.cut = 0
        """Episodes this wrapper ended (ones the env ended itself at the same step are not counted)."""
        self._steps = 0

    def reset(self, **kwargs: Any) -> Any:
        self._steps = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self._steps >= self.max_steps and not (terminated or truncated):
            truncated, self.cut = True, self.cut + 1
        return obs, reward, terminated, truncated, info


def replay_bytes(algo: Algorithm, run: Any) -> int | None:
    """Bytes the run's replay(s) hold (SAC's replay, PPO's online-UL replays); None when it has none."""
    replays = algo.replays(run)
    return sum(r.nbytes for r in replays) if replays else None


class Diverged(RuntimeError):
    """A loss (or the weights) became NaN/inf; the message names the last good checkpoint."""


class StopRequested(Exception):
    """Raised from a loop callback to end the session early (--stop-after), after a checkpoint."""


def build(plan: Plan, encoder: ConvEncoder | None = None) -> Any:
    """A fresh run of the plan's agent (``encoder`` replaces loading one from the encoder file)."""
    return plan.algorithm.build_run(plan.loop, encoder=encoder)


def describe_run(cfg: Any, plan: Plan, run: Any) -> RunInfo:
    """The RunInfo (config.json) of a freshly built run."""
    from atcrl.envs import env_meta

    meta = env_meta(run.env)
    encoder, obs_shape, action_dim = plan.algorithm.shapes(run)
    return RunInfo(algo=plan.algo, preset=plan.preset, loop=plain_config(plan.loop), train=plain_config(cfg),
                   encoder_arch=encoder.arch, obs_shape=tuple(obs_shape), discrete=meta.discrete,
                   action_dim=action_dim, frame_stack=meta.frame_stack, action_repeat=meta.action_repeat)


def _finite_tensors(tree: Any) -> bool:
    if isinstance(tree, torch.Tensor):
        return not tree.is_floating_point() or bool(torch.isfinite(tree).all())
    if isinstance(tree, dict):
        return all(_finite_tensors(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_finite_tensors(v) for v in tree)
    return True


class Session:
    """The callbacks one process hands to the agent loop, and what they keep between calls."""

    def __init__(self, cfg: Any, plan: Plan, run_dir: Path, run: Any, info: RunInfo,
                 saved: dict[str, Any] | None):
        self.cfg, self.plan, self.run_dir, self.run, self.info = cfg, plan, run_dir, run, info
        self.algo = plan.algorithm
        saved = saved or {}
        self.evals: list[list[float]] = [list(e) for e in saved.get("evals", [])]
        """[step, mean eval return] of every evaluation so far, across sessions."""
        self.wall_before = float(saved.get("wall_time", 0.0))
        self.video_at = int(saved.get("video_at", -1))
        self.eval_at = int(saved.get("eval_at", -1))
        self.start, self.start_step, self.last_ckpt = time.monotonic(), run.step, run.step
        self.total = self.algo.total_steps(plan.loop)
        self.logger = MetricsLogger(run_dir, tensorboard=cfg.tensorboard,
                                    resume_from_step=run.step if cfg.resume else None,
                                    wandb_project=cfg.wandb_project if cfg.wandb else None,
                                    config={"train": plain_config(cfg), "loop": plain_config(plan.loop)})
        self.bar = Progress(self.total, initial=run.step, desc=f"train {plan.preset} {plan.loop.env}", show=SHOW,
                            warmup=self.algo.warmup_steps(plan.loop),
                            unit="step")
        self._envs: dict[str, EpisodeCap] = {}
        self.ctrl_c = StopOnCtrlC("stopping with a checkpoint after the current step")
        """Its ``requested`` is set by the first Ctrl-C: checkpoint at the next step boundary and stop."""
        memory = replay_bytes(self.algo, run)
        if memory is not None:
            self.logger.log(run.step, {"perf/replay_bytes": float(memory)})

    # ------------------------------------------------------------------ loop hooks (TrainHooks)
    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.logger.log(step, metrics)
        if "eval/return_mean" in metrics:
            self.evals.append([step, metrics["eval/return_mean"]])
        self.bar.update(step - self.bar.count, metrics)

    def evaluate(self, step: int, final: bool) -> None:
        """Deterministic episodes on the session's own eval env, at every --eval-every multiple and the end."""
        every = self.plan.eval_every
        if self.plan.eval_episodes and (final or (every and step // every > self.eval_at // every)):
            self._evaluate(step)

    def safe_point(self, step: int) -> None:
        """Checkpoint at every --ckpt-every multiple (and at the end); stop here on Ctrl-C or at --stop-after."""
        every = self.cfg.ckpt_every
        if step // every > self.last_ckpt // every or step >= self.total:
            self.checkpoint()
        stop_here = self.cfg.stop_after is not None and self.cfg.stop_after <= step
        if (stop_here or self.ctrl_c.requested) and step < self.total:
            if self.last_ckpt != step:
                self.checkpoint()
            raise StopRequested(step)

    # ------------------------------------------------------------------ evaluation and videos
    def _env(self, purpose: str, seed_offset: int) -> EpisodeCap:
        if purpose not in self._envs:
            from atcrl.envs import make_env

            env = make_env(self.plan.loop.env, seed=self.plan.loop.seed + seed_offset, **self.info.env_kwargs())
            self._envs[purpose] = EpisodeCap(env, max(1, EVAL_MAX_ENV_FRAMES // self.info.action_repeat))
        return self._envs[purpose]

    def _evaluate(self, step: int) -> None:
        env = self._env("eval", 10_000)
        cut_before = env.cut
        returns, lengths, _ = play(env, actor(self.run.agent), self.plan.eval_episodes)
        self.eval_at = step
        self.on_metrics(step, {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns)),
                               "eval/length_mean": float(np.mean(lengths)),
                               "eval/truncated": float(env.cut - cut_before)})

    def video(self, step: int) -> None:
        """An evaluation video at every --video-every multiple and at the end."""
        every = self.cfg.video_every
        if not every or (step // every <= self.video_at // every and step < self.total):
            return
        returns, _, frames = play(self._env("video", 20_000), actor(self.run.agent), 1, record=1,
                                  frame_channels=self.plan.frame_channels)
        path = write_video(frames, self.run_dir / "videos" / f"step_{step:08d}.{self.cfg.video_format}")
        self.video_at = step
        self.logger.log(step, {"eval/video_return": returns[0]})
        self.logger.log_video(step, path)
        print(f"video at step {step} (return {returns[0]:.1f}): {path}", file=sys.stderr)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> Path:
        run = self.run
        self.algo.check_finite(run)  # a NaN the loop has not read back yet must not be checkpointed
        state: dict[str, Any] = {"run": run.state_dict(), "step": run.step, "rng": rng_state(),
                                 "session": self.session_state()}
        if not _finite_tensors(state["run"]):
            raise FloatingPointError("the weights or optimizer state hold NaN/inf")
        if envs := self.algo.envs(run):
            state["envs"] = {name: ckpts.env_rng_state(env) for name, env in envs.items()}
        if self.cfg.checkpoint_replay and (replays := self.algo.replays(run)):
            state["replay"] = [r.state_dict() for r in replays]  # host and device replays share one layout
        path = ckpts.save(self.run_dir, run.step, state, self.info, self.cfg.keep_checkpoints)
        self.last_ckpt = run.step
        return path

    def session_state(self) -> dict[str, Any]:
        return {"wall_time": self.wall_time, "evals": self.evals, "video_at": self.video_at, "eval_at": self.eval_at}

    @property
    def wall_time(self) -> float:
        return self.wall_before + time.monotonic() - self.start

    def close(self) -> None:
        self.bar.close()
        self.logger.close()
        for env in self._envs.values():
            env.close()
        self.algo.close(self.run)

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        session_s = time.monotonic() - self.start
        steps = self.run.step - self.start_step
        out: dict[str, Any] = {
            "preset": self.plan.preset, "env": self.plan.loop.env, "steps": self.run.step,
            "env_steps": self.run.step * self.info.action_repeat, "wall_time_s": round(self.wall_time, 1),
            "session_steps": steps, "session_wall_time_s": round(session_s, 1),
            "steps_per_s": round(steps / session_s, 2) if session_s > 0 else None,
            "eval_curve": self.evals,
            # This session's settings: the fast path may change on --resume, so they live here, not in config.json.
            "fastpath": describe(self.run.cfg.fast, self.run.agent.device), "process": self.run.process,
        }
        if self.evals:
            best = max(self.evals, key=lambda e: e[1])
            out.update(best_eval_return=best[1], best_eval_step=int(best[0]), last_eval_return=self.evals[-1][1],
                       last_eval_step=int(self.evals[-1][0]))
        return out


def restore(run: Any, state: dict[str, Any], algo: Algorithm) -> None:
    """Put a checkpoint's state back into a freshly built run (the process RNGs last)."""
    run.load_state_dict(state["run"])
    algo.after_restore(run)
    envs = algo.envs(run)
    for name, env_state in state.get("envs", {}).items():
        ckpts.set_env_rng_state(envs[name], env_state)
    if "replay" in state:
        replays = algo.replays(run)
        saved = state["replay"] if isinstance(state["replay"], list) else [state["replay"]]
        for replay, replay_state in zip(replays, saved, strict=True):
            try:
                replay.load_state_dict(replay_state)
            except ValueError as e:  # another capacity than the run's
                raise ckpts.TrainRunError(str(e)) from e
    set_rng_state(state["rng"])


def _format_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def print_summary(s: dict[str, Any], run_dir: Path) -> None:
    rows = [("run", str(run_dir)), ("preset / env", f"{s['preset']} / {s['env']}"),
            ("agent steps", f"{s['steps']} (env steps {s['env_steps']})"),
            ("wall time", f"{_format_time(s['wall_time_s'])} (this session {_format_time(s['session_wall_time_s'])})"),
            ("steps/s", f"{s['steps_per_s']} (this session, evaluation and checkpoints included)")]
    if "best_eval_return" in s:
        rows += [("best eval return", f"{s['best_eval_return']:.1f} at step {s['best_eval_step']}"),
                 ("last eval return", f"{s['last_eval_return']:.1f} at step {s['last_eval_step']}")]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


def start_session(cfg: Any, plan: Plan, run_dir: Path, resumed: Resumed | None = None) -> Session:
    """Build the run (restored from its latest checkpoint when ``resumed``) and its session."""
    saved_session = None
    if resumed is not None:
        hold_dir_lock(run_dir, what="run directory")
        info = ckpts.read_run_info(run_dir)
        ckpt = ckpts.load(run_dir, info)
        # The checkpoint holds every weight, so the run is rebuilt around a blank conv of the saved shape.
        run = build(plan, ConvEncoder(info.encoder_arch, info.obs_shape))  # type: ignore[arg-type]
        restore(run, ckpt.state, plan.algorithm)
        saved_session = ckpt.state.get("session")
        print(f"resuming {run_dir} at step {run.step} from {ckpt.path.name}", file=sys.stderr)
        if resumed.changes:
            info = resumed.run_info(info, run.step)
            ckpts.write_run_info(run_dir, info)
            listing = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in resumed.changes.items())
            print(f"changed on resume: {listing} (recorded in {run_dir / ckpts.RUN_INFO})", file=sys.stderr)
    else:
        run = build(plan)
        info = describe_run(cfg, plan, run)
        hold_dir_lock(run_dir, what="run directory", fresh=True)
        ckpts.write_run_info(run_dir, info)
    return Session(cfg, plan, run_dir, run, info, saved_session)


def train_session(session: Session) -> int:
    """Train to the end (or --stop-after), then write and print the summary; returns the exit code."""
    run, run_dir = session.run, session.run_dir
    resume = shlex.join(["atcrl", "train", "--resume", str(run_dir)])
    interrupted = False
    try:
        with session.ctrl_c:
            session.algo.train(run, session)
    except StopRequested:
        interrupted = session.ctrl_c.requested
        why = "Ctrl-C" if interrupted else "--stop-after"
        print(f"stopped at step {run.step} ({why}); continue with `{resume}`", file=sys.stderr)
    except FloatingPointError as e:
        raise Diverged(divergence_message(e, session)) from e
    except KeyboardInterrupt:
        last = latest_checkpoint(run_dir / ckpts.CKPT_DIR)
        print(f"\ninterrupted at step {run.step}; continue from {last} with `{resume}`", file=sys.stderr)
        return 130
    finally:
        session.close()
    summary = session.summary()
    atomic_write(run_dir / "summary.json", lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))
    print_summary(summary, run_dir)
    return 130 if interrupted else 0  # a clean Ctrl-C stop exits 130, as every command's does


def divergence_message(error: Exception, session: Session) -> str:
    """What went wrong, where the last good checkpoint is, and a command that retries from it with lower
    learning rates."""
    run_dir, step = session.run_dir, session.run.step
    last = latest_checkpoint(run_dir / ckpts.CKPT_DIR)
    if last is None:
        return (f"{error} (at agent step {step}); no checkpoint was written before it. Lower the learning rates "
                "or check the rewards and observations for NaN/inf")
    return (f"{error} (at agent step {step}); the last good checkpoint is {last} (nothing after it was saved). "
            f"Retry from it with lower learning rates: `{retry_command(session.plan, run_dir)}`, or check the "
            "rewards and observations for NaN/inf")
