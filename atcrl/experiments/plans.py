"""The experiments by name: each module defines NAME, QUESTION, NOTES and ``plan(scale, seeds, reuse)``,
and may define DEFAULT_SEEDS (per scale) to override the scales' defaults."""

from __future__ import annotations

import importlib
from types import ModuleType

from atcrl.experiments.offline import Reuse
from atcrl.experiments.scales import DEFAULT_SEEDS, check_scale
from atcrl.experiments.spec import Experiment, PlanError, Scale

MODULES: dict[str, str] = {
    "online": "atcrl.experiments.online",
    "ul-benchmark": "atcrl.experiments.ul_benchmark",
    "multitask": "atcrl.experiments.multitask",
    "ablations": "atcrl.experiments.ablations",
    "latent-replay": "atcrl.experiments.latent_replay",
}
NAMES: tuple[str, ...] = tuple(MODULES)


def definition(name: str) -> ModuleType:
    if name not in MODULES:
        import difflib

        close = difflib.get_close_matches(name, NAMES, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise PlanError(f"unknown experiment {name!r}.{hint} Experiments: {', '.join(NAMES)}")
    return importlib.import_module(MODULES[name])


def default_seeds(name: str, scale: Scale) -> int:
    """The experiment's own default (module DEFAULT_SEEDS), else the scale's."""
    return getattr(definition(name), "DEFAULT_SEEDS", DEFAULT_SEEDS)[scale]


def build(name: str, scale: Scale, seeds: int | None = None, reuse: Reuse | None = None) -> Experiment:
    """The plan of experiment ``name`` at ``scale`` with seeds 0..seeds-1 (None: the default)."""
    definition(name)  # an unknown name is named before its scale is checked
    check_scale(name, scale)
    count = default_seeds(name, scale) if seeds is None else seeds
    if count < 1:
        raise PlanError(f"--seeds must be >= 1, got {count}")
    return definition(name).plan(scale, tuple(range(count)), reuse or Reuse())
