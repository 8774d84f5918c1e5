"""Typed command-line overrides of a config dataclass whose defaults come from somewhere else (a preset).

``overrides_of(SACLoopConfig)`` builds a frozen dataclass with the same fields, each typed
``T | None`` and defaulting to None ("keep the preset's value"), with the original field docstrings
as --help text; nested config dataclasses become nested override dataclasses. tyro then gives
``--sac.batch-size 128`` and ``--sac.agent.q-lr 2e-4`` without a second copy of any field list,
and ``apply_overrides`` lays the values that were given over the preset's config.

Also here: rebuilding a config dataclass from its JSON form (for resuming), and a leaf-level diff
of two such forms that names every differing field.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import itertools
import textwrap
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import tyro

_SOURCE_FIELD = "__override_source__"
_RENAMED = "__override_renamed__"


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body (what tyro shows as help)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def overrides_of(cls: type, *, exclude: tuple[str, ...] = (), rename: Mapping[str, str] | None = None,
                 example: Any = None, example_name: str = "") -> type:
    """A dataclass ``<cls>Overrides`` of optional fields mirroring ``cls`` (see the module doc).

    exclude: fields the command sets elsewhere (e.g. its own --env). rename: field -> CLI name, for
    nested configs whose field name would repeat the group's (``sac.sac`` -> ``sac.agent``).
    example / example_name: a config whose values the help shows as "[<example_name>: value]".
    """
    rename = dict(rename or {})
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        name, kind, doc = rename.get(f.name, f.name), hints[f.name], docs.get(f.name, "")
        current = getattr(example, f.name) if example is not None else None
        if dataclasses.is_dataclass(kind):
            sub = overrides_of(kind, example=current, example_name=example_name)
            fields.append((name, Annotated[sub, tyro.conf.arg(help=doc)], dataclasses.field(default_factory=sub)))
            continue
        shown = current.value if isinstance(current, enum.Enum) else current
        hint = f"[{example_name}: {shown!r}]" if example is not None else "(default: the preset's)"
        fields.append((name, Annotated[kind | None, tyro.conf.arg(help=doc, help_behavior_hint=hint)],
                       dataclasses.field(default=None)))
    made = dataclasses.make_dataclass(f"{cls.__name__}Overrides", fields, frozen=True)
    setattr(made, _SOURCE_FIELD, cls)
    setattr(made, _RENAMED, {v: k for k, v in rename.items()})
    made.__doc__ = f"Overrides of {cls.__name__} (None keeps the preset's value)."
    return made


def given(overrides: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted CLI path -> value of every override that was set (not None)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(overrides):
        value = getattr(overrides, f.name)
        if dataclasses.is_dataclass(value):
            out.update(given(value, f"{prefix}{f.name}."))
        elif value is not None:
            out[prefix + f.name] = value
    return out


def apply_overrides(config: Any, overrides: Any) -> Any:
    """``config`` with every set field of ``overrides`` replaced (recursively for nested configs)."""
    renamed: dict[str, str] = getattr(type(overrides), _RENAMED, {})
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(overrides):
        value = getattr(overrides, f.name)
        target = renamed.get(f.name, f.name)
        if dataclasses.is_dataclass(value):
            nested = apply_overrides(getattr(config, target), value)
            if nested != getattr(config, target):
                changes[target] = nested
        elif value is not None:
            changes[target] = value
    return dataclasses.replace(config, **changes) if changes else config


def config_from_plain(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from ``checkpoint.plain_config`` output (lists back to tuples,
    nested dicts back to dataclasses); fields missing from ``data`` keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - names):
        raise ValueError(f"saved {cls.__name__} has fields this version does not know: {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = config_from_plain(kind, value)
        elif isinstance(value, list):
            value = _tuples(value)
        values[name] = value
    return cls(**values)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def plain_diff(saved: Mapping[str, Any], current: Mapping[str, Any], *, ignore: tuple[str, ...] = (),
               prefix: str = "") -> list[str]:
    """``path: saved (run) vs current (now)`` for every differing leaf of two plain configs."""
    diffs = []
    for key in dict.fromkeys([*saved, *current]):
        path = prefix + key
        if path in ignore:
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += plain_diff(a, b, ignore=ignore, prefix=path + ".")
        elif a != b:
            diffs.append(f"{path}: {a!r} (run) vs {b!r} (now)")
    return diffs


def merge_overrides(base: Any, top: Any) -> Any:
    """Two override instances of one class: ``top``'s set fields over ``base``'s."""
    changes = {}
    for f in dataclasses.fields(top):
        value = getattr(top, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = merge_overrides(getattr(base, f.name), value)
        elif value is not None:
            changes[f.name] = value
    return dataclasses.replace(base, **changes)


def config_path(overrides_type: type, dotted: str) -> tuple[str, ...]:
    """The config-field path that the override ``dotted`` (CLI names, e.g. ``agent.q_lr``) sets, e.g.
    ``("sac", "q_lr")``; ValueError naming the unknown part."""
    names = dotted.replace("-", "_").split(".")
    path, kind = [], overrides_type
    for i, name in enumerate(names):
        fields = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
        if name not in fields:
            where = ".".join(names[:i]) or "the group"
            raise ValueError(f"{dotted!r}: {where} has no setting {name!r} (its settings: {', '.join(fields)})")
        path.append(getattr(kind, _RENAMED, {}).get(name, name))
        kind = typing.get_type_hints(kind)[name]
        kind = typing.get_args(kind)[0] if typing.get_origin(kind) is Annotated else kind
    if dataclasses.is_dataclass(kind):
        raise ValueError(f"{dotted!r} names a group of settings; name one setting in it")
    return tuple(path)


def with_override(overrides: Any, dotted: str, value: Any) -> Any:
    """``overrides`` with the field at ``dotted`` (CLI names, as in ``config_path``) set to ``value``."""
    head, _, rest = dotted.replace("-", "_").partition(".")
    if not rest:
        return dataclasses.replace(overrides, **{head: value})
    return dataclasses.replace(overrides, **{head: with_override(getattr(overrides, head), rest, value)})
