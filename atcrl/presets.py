"""Named paper settings, one table per kind of run (docs/reference-settings.md:
"Offline pretraining", "Online SAC + ATC for DMC", "PPO for Atari").

A preset is a plain frozen dataclass of component configs; commands take ``--preset NAME`` and
their own flags override single fields. Each kind of run keeps its own table below, so adding
the RL presets is one more dataclass and dict, with no change to the existing ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from atcrl.nets.encoders import EncoderName
from atcrl.rl.modes import EncoderMode
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
    """One online-RL setting of the paper: which agent, the default env and the loop fields it sets.

    ``settings`` are applied on top of the agent loop's paper defaults for the chosen env
    (SAC: ``sac_loop.paper_config(env)``, which also picks the task's run length and cheetah's
    batch/lr; PPO: ``PPOLoopConfig(env=env)``), so a preset states only how it differs.
    """

    algo: Literal["sac", "ppo"]
    """SAC for continuous actions, PPO for discrete ones."""
    env: str
    """Env used when --env is not given."""
    summary: str
    """One line for --help and error messages."""
    settings: Mapping[str, Any]
    """Loop-config fields (SACLoopConfig / PPOLoopConfig) this preset sets."""
    needs_encoder: bool = False
    """The setting starts from a pretrained encoder (--encoder FILE is required)."""


SAC_LOG_EVERY = 100
"""Agent steps between SAC metric records, which also refresh the progress display: at CPU update
rates the loop's default of 1000 steps would leave the display unchanged for many minutes."""

RL_PRESETS: dict[str, RLPreset] = {
    "dmc-atc": RLPreset("sac", "dmc:cartpole-swingup",
                        "decoupled: ATC alone trains the conv, SAC sees detached features (DMC online)",
                        {"mode": EncoderMode.decoupled, "ul": "atc", "log_every": SAC_LOG_EVERY}),
    "dmc-rad": RLPreset("sac", "dmc:cartpole-swingup",
                        "end-to-end RAD-SAC: the critic loss trains the conv, with random shift",
                        {"mode": EncoderMode.end_to_end, "log_every": SAC_LOG_EVERY}),
    "dmc-frozen": RLPreset("sac", "dmc:cartpole-swingup",
                           "SAC on a frozen pretrained encoder; the replay stores its latents (sub-pixel shift)",
                           {"mode": EncoderMode.frozen, "latent_replay": True, "log_every": SAC_LOG_EVERY},
                           needs_encoder=True),
    "atari-ppo-atc": RLPreset("ppo", "atari:Pong", "PPO, conv trained only by online ATC (\"ATC only\")",
                              {"mode": EncoderMode.decoupled, "ul": "atc"}),
    "atari-ppo": RLPreset("ppo", "atari:Pong", "end-to-end PPO, no UL (\"RL only\")",
                          {"mode": EncoderMode.end_to_end, "ul": "none"}),
    "atari-ppo-rl-atc": RLPreset("ppo", "atari:Pong", "end-to-end PPO plus online ATC on the same conv (\"RL+ATC\")",
                                 {"mode": EncoderMode.end_to_end, "ul": "atc"}),
    "atari-ppo-atc-init": RLPreset(
        "ppo", "atari:Pong", "10k ATC updates on the first 1e5 random steps, then end-to-end PPO (\"ATC-init\")",
        {"mode": EncoderMode.end_to_end, "ul": "atc", "ul_schedule": "front", "ul_front_updates": 10_000,
         "ul_updates": 0, "ul_start_steps": 100_000, "rl_start_steps": 100_000}),
    "atari-ppo-frozen": RLPreset("ppo", "atari:Pong", "PPO on a frozen pretrained encoder",
                                 {"mode": EncoderMode.frozen, "ul": "none"}, needs_encoder=True),
}
"""DMLab (PPO-LSTM) has no preset: there is no LSTM agent or DMLab env here."""

DEFAULT_RL_PRESET = {False: "dmc-atc", True: "atari-ppo-atc"}
"""The preset used without --preset, by whether the env's actions are discrete."""


def rl_preset(name: str) -> RLPreset:
    """The preset ``name``; ValueError naming close matches and listing all presets otherwise."""
    if name not in RL_PRESETS:
        close = difflib.get_close_matches(name, RL_PRESETS, n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listing = "; ".join(f"{k} ({p.summary})" for k, p in RL_PRESETS.items())
        raise ValueError(f"unknown training preset {name!r}.{hint} Presets: {listing}")
    return RL_PRESETS[name]
