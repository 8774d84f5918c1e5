"""Which config fields may change when a run is resumed: marked once, on the field, and read from there.

    device: str = field(default="auto", metadata=RESUMABLE)   # its docstring follows, as for any field

``RESUMABLE`` marks a field whose value may differ from the run's on ``--resume`` (it changes speed,
logging or scheduling, not what is trained); ``SESSION_ONLY`` marks one that belongs to a single process
and is never restored from the run (``--out``, ``--stop-after``, the device). Commands compare a resumed
run's settings field by field and skip what ``resumable_fields`` names.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from types import MappingProxyType

_KEY = "resume"
RESUMABLE: Mapping[str, str] = MappingProxyType({_KEY: "may_change"})
"""Field metadata: the value may differ from the run's on resume."""
SESSION_ONLY: Mapping[str, str] = MappingProxyType({_KEY: "session"})
"""Field metadata: one process's setting, free to change on resume and never restored from the run."""


def resumable_fields(cls: type, prefix: str = "") -> tuple[str, ...]:
    """Dotted paths of the fields of ``cls`` (and of its nested config dataclasses) that may change on resume,
    session-only fields included."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get(_KEY) in (RESUMABLE[_KEY], SESSION_ONLY[_KEY]):
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            out += resumable_fields(hints[f.name], f"{prefix}{f.name}.")
    return tuple(out)


def session_fields(cls: type) -> tuple[str, ...]:
    """Top-level fields of ``cls`` that belong to one process and are never restored from the run."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(_KEY) == SESSION_ONLY[_KEY])
