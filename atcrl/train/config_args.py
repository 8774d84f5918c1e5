"""NAME=VALUE command-line overrides for the fields of a config dataclass (e.g. a UL objective's).

Commands expose their common settings as typed flags; the many per-objective knobs go through
``--objective-args length=8 crop=32`` instead, typed here from the field's current value.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def parse_overrides(config: Any, args: tuple[str, ...], *, what: str) -> dict[str, Any]:
    """``{"field": value}`` for ``args`` like ("length=8", "use_W=false"); ValueError names a bad item.

    A value takes the type of the field's current value (bool, int, float, str); for a field that is
    currently None it is read as int, float, true/false or left a string. "none" sets None.
    """
    current = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} if config is not None else {}
    parsed: dict[str, Any] = {}
    for arg in args:
        name, sep, text = arg.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {arg!r}")
        if name not in current:
            raise ValueError(f"{what} has no setting {name!r} (its settings: {', '.join(sorted(current)) or 'none'})")
        try:
            parsed[name] = parse_value(text.strip(), current[name])
        except ValueError as e:
            raise ValueError(f"{arg!r}: {e}") from e
    return parsed


def parse_value(text: str, like: Any) -> Any:
    """``text`` as the type of ``like`` (see parse_overrides)."""
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if isinstance(like, bool) or lowered in ("true", "false"):
        if lowered not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return lowered == "true"
    if isinstance(like, str):
        return text
    for cast in (type(like),) if isinstance(like, (int, float)) else (int, float):
        try:
            return cast(text)
        except ValueError:
            if like is not None:
                raise ValueError(f"expected {cast.__name__}, got {text!r}") from None
    return text
