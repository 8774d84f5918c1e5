"""The paper's claims per experiment, as comparisons the report decides (verdicts.py).

Each claim names the (group, variant) of the steps that should score higher and of those they are
compared with, as the experiment plans (atcrl/experiments) name them. A report shows the claims
whose both sides have steps in the experiment.
"""

from __future__ import annotations

from atcrl.experiments import ablations, ul_benchmark
from atcrl.report.verdicts import Claim

RETURN, R2 = "final return", "probe mean R²"


def _versus(text: str, metric: str, group: str, better: str, others: tuple[str, ...]) -> tuple[Claim, ...]:
    return tuple(Claim(text.format(other=o), metric, (group, better), (group, o)) for o in others if o != better)  # type: ignore[arg-type]


_DMC = tuple(o for o in ul_benchmark.DMC_OBJECTIVES if o != "atc")
_ATARI = tuple(o for o in ul_benchmark.ATARI_OBJECTIVES if o != "atc")
_ABLATED = tuple(v for v in ablations.VARIANTS if v != "atc")

CLAIMS: dict[str, tuple[Claim, ...]] = {
    "online": (
        Claim("Decoupled ATC (no RL gradient in the conv) scores higher than end-to-end RL on DMControl (SAC); "
              "the paper: matches or beats it", RETURN, ("online-dmc", "decoupled-atc"), ("online-dmc", "end-to-end")),
        Claim("Decoupled ATC scores higher than end-to-end RL on Atari (PPO); the paper: matches or beats it",
              RETURN, ("online-atari", "decoupled-atc"), ("online-atari", "end-to-end")),
    ),
    "ul-benchmark": (
        *_versus("Frozen ATC encoder beats {other} for RL (DMControl)", RETURN, "frozen-rl", "atc", _DMC),
        Claim("RL on a frozen ATC encoder scores higher than end-to-end RL (the paper: competitive with it)", RETURN,
              ("frozen-rl", "atc"), ("frozen-rl", "end-to-end")),
        *_versus("ATC beats {other} on the linear probe of the physics state", R2, "probe", "atc", _DMC),
        *_versus("Frozen ATC encoder beats {other} for RL (Atari)", RETURN, "atari-frozen-rl", "atc", _ATARI),
        Claim("RL on a frozen ATC encoder scores higher than end-to-end RL on Atari (the paper: competitive)", RETURN,
              ("atari-frozen-rl", "atc"), ("atari-frozen-rl", "end-to-end")),
    ),
    "multitask": (
        Claim("A multi-task ATC encoder, frozen, beats a random encoder on tasks it was pretrained on", RETURN,
              ("frozen-seen", "multi-task"), ("frozen-seen", "random")),
        Claim("A multi-task ATC encoder, frozen, beats a random encoder on tasks it was not pretrained on", RETURN,
              ("frozen-unseen", "multi-task"), ("frozen-unseen", "random")),
        Claim("A multi-task ATC encoder pretrained without cartpole beats a random encoder on cartpole-swingup",
              RETURN, ("frozen-unseen", "multi-task-without-cartpole-swingup"), ("frozen-seen", "random")),
        Claim("PPO on an ATC encoder pretrained on the other seven Atari games, frozen, scores higher than end-to-end "
              "PPO on the held-out game (a directional test of transfer to an unseen game)", RETURN,
              ("atari-unseen", "frozen"), ("atari-unseen", "end-to-end")),
        Claim("PPO fine-tuning an ATC encoder pretrained on the other seven Atari games scores higher than end-to-end "
              "PPO from scratch on the held-out game", RETURN,
              ("atari-unseen", "fine-tune"), ("atari-unseen", "end-to-end")),
    ),
    "ablations": (
        *_versus("Full ATC beats its {other} variant on the linear probe", R2, "probe", "atc", _ABLATED),
        Claim("Full ATC beats ATC without augmentation for frozen RL", RETURN, ("frozen-rl", "atc"),
              ("frozen-rl", "no-augmentation")),
    ),
    "latent-replay": (
        Claim("Replayed latents with the sub-pixel shift beat latents without any shift", RETURN,
              ("frozen-rl", "latent-subpixel-shift"), ("frozen-rl", "latent-no-shift")),
        Claim("Replayed latents with the sub-pixel shift score higher than pixels with the pixel shift (the paper "
              "claims equal returns; this is the directional test)", RETURN,
              ("frozen-rl", "latent-subpixel-shift"), ("frozen-rl", "pixel-random-shift")),
    ),
}
