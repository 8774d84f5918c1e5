"""Error helpers shared by the env families: a missing optional extra, an unknown name."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType


def pip_command(extra: str) -> str:
    """The command that installs an atcrl extra."""
    return f"pip install 'atcrl[{extra}]'"


def require(module: str, extra: str | None, family: str, install: str | None = None) -> ModuleType:
    """Import an optional dependency, or say how to install it: the atcrl extra, or `install` when no
    extra can (a package pip cannot install)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        how = install or pip_command(str(extra))
        raise ImportError(
            f"the {family!r} environments need the optional package {module!r}, which is not installed "
            f"({err}). Install it with: {how}"
        ) from err


def unknown(kind: str, name: str, choices: Iterable[str], example: str | None = None) -> ValueError:
    """A ValueError naming the closest valid choices (difflib), for the caller to raise."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    if not close:  # case slips ("pong" for "Pong") are common and score low in difflib
        lowered = {c.lower(): c for c in choices}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.5)
        close = [lowered[c] for c in close]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    if example:
        hint += f" (e.g. {example})"
    return ValueError(f"unknown {kind} {name!r}.{hint}")
