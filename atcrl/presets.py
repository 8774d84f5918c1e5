"""Named paper settings (PAPER.md, "Settings"), one table per kind of run.

A preset is a plain frozen dataclass of component configs; commands take ``--preset NAME`` and
their own flags override single fields. Each kind of run keeps its own table below, so adding
the RL presets is one more dataclass and dict, with no change to the existing ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from atcrl.nets.encoders import EncoderName
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
