"""Objectives by name, so configs and the CLI can say ``ul=cpc`` without importing every objective.

Each objective module is imported only when asked for: a run that uses ATC never pays for
(or breaks on) the others' imports.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from atcrl.nets.encoders import ConvEncoder
from atcrl.ul.base import Objective

# name -> (module, class, optional function turning the class's config into this variant's config)
_OBJECTIVES: dict[str, tuple[str, str, str | None]] = {
    "atc": ("atcrl.ul.atc", "ATC", None),
    "ac": ("atcrl.ul.atc", "ATC", "ac_config"),
    "ats": ("atcrl.ul.atc", "ATC", "ats_config"),
    "cpc": ("atcrl.ul.cpc", "CPC", None),
    "stdim": ("atcrl.ul.stdim", "STDIM", None),
    "vae": ("atcrl.ul.vae", "VAE", None),
    "pixel-control": ("atcrl.ul.pixel_control", "PixelControl", None),
    "inverse": ("atcrl.ul.inverse", "InverseModel", None),
    "random": ("atcrl.ul.random_encoder", "RandomEncoder", None),
}

OBJECTIVE_NAMES: tuple[str, ...] = tuple(_OBJECTIVES)


def _resolve(name: str) -> tuple[type, Callable[[Any], Any] | None]:
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown UL objective {name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")
    module_name, class_name, variant = _OBJECTIVES[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name), (getattr(module, variant) if variant else None)


def atc_family(name: str) -> bool:
    """Whether objective ``name`` is ATC or one of its variants (configured by an ``ATCConfig``)."""
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown UL objective {name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")
    return _OBJECTIVES[name][:2] == _OBJECTIVES["atc"][:2]


def default_config(name: str) -> Any:
    """The config an objective is built with when none is given (a frozen dataclass, or None)."""
    cls, variant = _resolve(name)
    param = inspect.signature(cls).parameters.get("cfg")
    base = None if param is None or param.default is inspect.Parameter.empty else param.default
    return variant(base) if variant else base


def make_objective(
    name: str,
    encoder: ConvEncoder,
    cfg: Any = None,
    *,
    action_dim: int | None = None,
    discrete_actions: bool = False,
) -> Objective:
    """Build objective ``name`` around ``encoder``.

    cfg: the objective's config dataclass (None = its defaults). For the variants "ac" and "ats"
    an ATCConfig is turned into the variant (e.g. "ac" forces delta_t=0 and no predictor).
    action_dim / discrete_actions: the env's action space (size of a continuous action, or the
    number of discrete actions), needed by objectives that read actions (inverse model, CPC,
    VAE with actions, pixel control); the others ignore it.
    """
    cls, variant = _resolve(name)
    if variant is not None:
        cfg = variant(cfg if cfg is not None else default_config("atc"))
    actions = {"action_dim": action_dim, "discrete_actions": discrete_actions}
    return cls(encoder, **actions) if cfg is None else cls(encoder, cfg, **actions)

