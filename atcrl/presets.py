"""Named paper settings, one table per kind of run (docs/reference-settings.md:
"Offline pretraining", "Online SAC + ATC for DMC", "PPO for Atari").

A preset is a plain frozen dataclass of component configs; commands take ``--preset NAME`` and
their own flags override single fields. Each kind of run keeps its own table below, so adding
the RL presets is one more dataclass and dict, with no change to the existing ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from atcrl.nets.encoders import EncoderName
from atcrl.rl.dqn import DQNConfig
from atcrl.rl.modes import EncoderMode
from atcrl.train.dqn_loop import DQNLoopConfig
from atcrl.train.ppo_loop import PPOLoopConfig
from atcrl.train.ppo_lstm_loop import PPOLSTMLoopConfig
from atcrl.train.sac_loop import paper_config
from atcrl.ul.atc import ATC_PRESETS, ATCConfig
from atcrl.ul.optim import ULOptimConfig

# --------------------------------------------------------------------------- offline UL pretraining


@dataclass(frozen=True)
class PretrainPreset:
    """Offline pretraining of one encoder on recorded episodes."""

    encoder: EncoderName
    """Conv architecture (see atcrl.nets.encoders.ARCHITECTURES)."""
    atc: ATCConfig
    """Δt, batch, latent size and shift probability; used by the ATC family (atc, ac, ats)."""
    optim: ULOptimConfig
    """Learning rate, warm-up and the number of updates (total_updates)."""


PRETRAIN_PRESETS: dict[str, PretrainPreset] = {
    "dmc": PretrainPreset("dmc", ATC_PRESETS["dmc"], ULOptimConfig(lr=1e-3, warmup_updates=1000, total_updates=10_000)),
    "atari": PretrainPreset(
        "atari", ATC_PRESETS["atari"], ULOptimConfig(lr=1e-3, warmup_updates=1000, total_updates=20_000)
    ),
    "dmlab": PretrainPreset(
        "dmlab", ATC_PRESETS["dmlab"], ULOptimConfig(lr=1e-3, warmup_updates=1000, total_updates=30_000)
    ),
}


def pretrain_preset(name: str) -> PretrainPreset:
    if name not in PRETRAIN_PRESETS:
        raise ValueError(f"unknown pretraining preset {name!r}; choose one of {', '.join(PRETRAIN_PRESETS)}")
    return PRETRAIN_PRESETS[name]


# --------------------------------------------------------------------------- online RL (atcrl train)


@dataclass(frozen=True)
class RLPreset:
    """One online-RL setting of the paper: which agent, the default env and the loop config it trains with."""

    algo: str
    """The agent (atcrl.train.algorithms): "sac" for continuous actions, "ppo", "ppo_lstm" or "dqn" for discrete ones."""
    env: str
    """Env used when --env is not given."""
    summary: str
    """One line for --help and error messages."""
    config: Callable[[str], Any]
    """env -> the complete loop config (SACLoopConfig / PPOLoopConfig) of this setting for that env: the
    agent's paper defaults for the env (SAC: ``paper_config``, with the task's run length and cheetah's
    batch and learning rates) with this setting's fields replaced."""
    needs_encoder: bool = False
    """The setting starts from a pretrained encoder (--encoder FILE is required)."""


DMLAB_ENV = "miniworld:FourRooms"
"""Default env of the DMLab (PPO-LSTM) presets: a 3D stand-in rendered like DMLab (72x96 RGB, action repeat 4)."""

SAC_LOG_EVERY = 100
"""Agent steps between SAC metric records, which also refresh the progress display: at CPU update
rates the loop's default of 1000 steps would leave the display unchanged for many minutes."""


RL_PRESETS: dict[str, RLPreset] = {
    "dmc-atc": RLPreset("sac", "dmc:cartpole-swingup",
                        "decoupled: ATC alone trains the conv, SAC sees detached features (DMC online)",
                        lambda env: replace(paper_config(env), mode=EncoderMode.decoupled, ul="atc",
                                            log_every=SAC_LOG_EVERY)),
    "dmc-rad": RLPreset("sac", "dmc:cartpole-swingup",
                        "end-to-end RAD-SAC: the critic loss trains the conv, with random shift",
                        lambda env: replace(paper_config(env), mode=EncoderMode.end_to_end, log_every=SAC_LOG_EVERY)),
    "dmc-frozen": RLPreset("sac", "dmc:cartpole-swingup",
                           "SAC on a frozen pretrained encoder; the replay stores its latents (sub-pixel shift)",
                           lambda env: replace(paper_config(env), mode=EncoderMode.frozen, latent_replay=True,
                                               log_every=SAC_LOG_EVERY), needs_encoder=True),
    "atari-ppo-atc": RLPreset("ppo", "atari:Pong", "PPO, conv trained only by online ATC (\"ATC only\")",
                              lambda env: PPOLoopConfig(env=env, mode=EncoderMode.decoupled, ul="atc")),
    "atari-ppo": RLPreset("ppo", "atari:Pong", "end-to-end PPO, no UL (\"RL only\")",
                          lambda env: PPOLoopConfig(env=env, mode=EncoderMode.end_to_end, ul="none")),
    "atari-ppo-rl-atc": RLPreset("ppo", "atari:Pong", "end-to-end PPO plus online ATC on the same conv (\"RL+ATC\")",
                                 lambda env: PPOLoopConfig(env=env, mode=EncoderMode.end_to_end, ul="atc")),
    "atari-ppo-atc-init": RLPreset(
        "ppo", "atari:Pong", "10k ATC updates on the first 1e5 random steps, then end-to-end PPO (\"ATC-init\")",
        lambda env: PPOLoopConfig(env=env, mode=EncoderMode.end_to_end, ul="atc", ul_schedule="front",
                                  ul_front_updates=10_000, ul_updates=0, ul_start_steps=100_000,
                                  rl_start_steps=100_000)),
    "atari-ppo-frozen": RLPreset("ppo", "atari:Pong", "PPO on a frozen pretrained encoder",
                                 lambda env: PPOLoopConfig(env=env, mode=EncoderMode.frozen, ul="none"),
                                 needs_encoder=True),
    "dmlab-ppo": RLPreset("ppo_lstm", DMLAB_ENV, "end-to-end PPO-LSTM, no UL (\"RL only\", DMLab settings)",
                          lambda env: PPOLSTMLoopConfig(env=env, mode=EncoderMode.end_to_end, ul="none")),
    "dmlab-ppo-atc": RLPreset("ppo_lstm", DMLAB_ENV, "PPO-LSTM, conv trained only by online ATC (\"ATC only\")",
                              lambda env: PPOLSTMLoopConfig(env=env, mode=EncoderMode.decoupled, ul="atc")),
    "dmlab-ppo-rl-atc": RLPreset("ppo_lstm", DMLAB_ENV, "end-to-end PPO-LSTM plus online ATC on the same conv (\"RL+ATC\")",
                                 lambda env: PPOLSTMLoopConfig(env=env, mode=EncoderMode.end_to_end, ul="atc")),
    "dmlab-ppo-frozen": RLPreset("ppo_lstm", DMLAB_ENV, "PPO-LSTM on a frozen pretrained encoder",
                                 lambda env: PPOLSTMLoopConfig(env=env, mode=EncoderMode.frozen, ul="none"),
                                 needs_encoder=True),
}
"""The DMLab presets train on the DMLab-shaped 3D stand-in family (DMLAB_ENV): there is no DeepMind Lab here."""

# ----------------------------------------------------------------- DQN expert presets (atcrl.train.dqn_loop)

DQN_PRESETS: dict[str, RLPreset] = {
    "atari-dqn": RLPreset("dqn", "atari:Pong",
                          "the Atari DQN expert: end-to-end double DQN, 8 envs with ε log-spaced in [0.001, 0.2]",
                          lambda env: DQNLoopConfig(env=env)),
    "tiny-dqn": RLPreset("dqn", "tiny:catch", "a small double DQN that learns tiny:catch in seconds (tests, demos)",
                         lambda env: DQNLoopConfig(
                             env=env, steps=4_000, num_envs=4, replay_size=8_000, warmup_steps=400,
                             train_every=2, eps_decay_steps=2_000, eps_min=0.01, eps_max=0.05, image_size=32,
                             encoder="dmc", log_every=500,
                             dqn=DQNConfig(lr=1e-3, hidden=64, target_update_every=100))),
}
"""Kept apart from the table above so that each agent's presets are one block of their own."""
RL_PRESETS.update(DQN_PRESETS)

DEFAULT_RL_PRESET = {False: "dmc-atc", True: "atari-ppo-atc"}
"""The preset used without --preset, by whether the env's actions are discrete."""


def rl_preset(name: str, table: Mapping[str, RLPreset] = RL_PRESETS) -> RLPreset:
    """The preset ``name`` of ``table``; ValueError naming close matches and listing all presets otherwise."""
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listing = "; ".join(f"{k} ({p.summary})" for k, p in table.items())
        raise ValueError(f"unknown training preset {name!r}.{hint} Presets: {listing}")
    return table[name]
