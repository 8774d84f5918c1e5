"""The ``atcrl dataset ...`` subcommands: info, validate, import-minari, export-minari.

Each is a frozen config plus a ``run_*(cfg) -> int`` returning the process exit code:
0 success, 1 the dataset has bad episode files, 2 bad input (the message says what); the same
codes as every atcrl command (``atcrl.failures``).
``main(argv)`` runs them standalone: ``python -m atcrl.data.dataset_cli info DIR``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from atcrl.data.dataset_files import META_FILE, episode_files
from atcrl.data.dataset_meta import CorruptEpisodeError, DatasetError
from atcrl.data.dataset_reader import open_dataset, validate_dataset
from atcrl.failures import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

EXIT_BAD_FILES = EXIT_FAILED
"""A dataset with bad episode files is the command's failure (exit 1), like any other."""


@dataclass(frozen=True)
class InfoConfig:
    path: tyro.conf.Positional[Path]
    """Dataset directory."""
    skip_corrupt: bool = False
    """Summarise the readable episodes even if some files are corrupt (they are listed)."""


@dataclass(frozen=True)
class ValidateConfig:
    path: tyro.conf.Positional[Path]
    """Dataset directory; every episode file is fully read and checked."""


@dataclass(frozen=True)
class ImportMinariConfig:
    source: tyro.conf.Positional[str]
    """Minari dataset id (looked up under MINARI_DATASETS_PATH) or a Minari dataset directory."""
    out: Path
    """Directory of the new atcrl dataset (must not exist yet)."""
    layout: Literal["auto", "chw", "hwc"] = "auto"
    """Channel axis of the observations; "auto" takes the smallest axis."""
    frame_channels: int | None = None
    """Channels of one frame, when observations are frame stacks that auto-detection cannot see."""
    minari_root: Path | None = None
    """Minari datasets root; overrides MINARI_DATASETS_PATH."""


@dataclass(frozen=True)
class ExportMinariConfig:
    path: tyro.conf.Positional[Path]
    """atcrl dataset directory to export."""
    id: str
    """Minari dataset id to create, e.g. "atcrl/cartpole-expert-v0"."""
    data_format: Literal["hdf5", "arrow"] = "hdf5"
    """Minari storage backend (needs minari[hdf5] or minari[arrow])."""
    minari_root: Path | None = None
    """Minari datasets root; overrides MINARI_DATASETS_PATH."""


def _progress(label: str, every: float = 2.0) -> Callable[[int, int], None]:
    """A progress callback printing to stderr at most every ``every`` seconds, and at the end."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every:
            last[0] = now
            print(f"{label}: {done}/{total} episodes", file=sys.stderr, flush=True)

    return report


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit} ({nbytes} bytes)"
        size /= 1024
    return f"{size:.1f} GiB ({nbytes} bytes)"


def _disk_bytes(root: Path) -> int:
    return (root / META_FILE).stat().st_size + sum(p.stat().st_size for _, p in episode_files(root))


def _fail(error: DatasetError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


@contextmanager
def _minari_root(root: Path | None) -> Iterator[None]:
    """Point Minari at ``root`` for the duration of one command."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if root is not None:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def run_info(cfg: InfoConfig) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped files are listed in the summary
            ds = open_dataset(cfg.path, skip_corrupt=cfg.skip_corrupt)
    except CorruptEpisodeError as e:
        q = shlex.quote(str(cfg.path))
        print(f"error: {e}. Pass --skip-corrupt to summarise the readable episodes; `atcrl dataset validate {q}` "
              "lists every bad file", file=sys.stderr)
        return EXIT_BAD_FILES
    except DatasetError as e:
        return _fail(e)
    meta = ds.meta
    returns = np.array([s.episode_return for s in ds.summaries])
    tasks = Counter(s.task for s in ds.summaries)
    ends = Counter(
        "terminated" if s.terminated else "truncated" if s.truncated else "open" for s in ds.summaries
    )
    lines = [
        ("dataset", str(ds.path)),
        ("format", f"atcrl-episodes, written by {meta.created_by}"),
        ("episodes", f"{len(ds)} ({', '.join(f'{n} {k}' for k, n in sorted(ends.items()))})"),
        (
            "steps",
            f"{ds.num_steps} (x action_repeat {meta.action_repeat} = {ds.num_steps * meta.action_repeat} env steps)",
        ),
        ("returns", f"mean {returns.mean():.3f}  min {returns.min():.3f}  max {returns.max():.3f}"),
        ("tasks", ", ".join(f"{t or '(none)'} ({n})" for t, n in sorted(tasks.items()))),
        (
            "frames",
            f"{'x'.join(map(str, meta.frame_shape))} {meta.frame_dtype}, stacked by {meta.frame_stack}",
        ),
        (
            "actions",
            f"{'discrete' if meta.discrete else 'continuous'} {meta.action_dtype}{list(meta.action_shape)}"
            + (f", {meta.num_actions} actions" if meta.num_actions else ""),
        ),
        ("physics", "none" if meta.physics_dim is None else f"{meta.physics_dim} dims per frame"),
        ("on disk", _human(_disk_bytes(ds.path))),
        ("in RAM", f"{_human(ds.nbytes)} once loaded (single frames)"),
    ]
    if ds.bad:
        lines.append(("skipped", f"{len(ds.bad)} corrupt file(s): " + ", ".join(p.name for p, _ in ds.bad)))
    for key, value in lines:
        print(f"{key:<10}{value}")
    return EXIT_OK


def run_validate(cfg: ValidateConfig) -> int:
    try:
        report = validate_dataset(cfg.path, progress=_progress("validate"))
    except DatasetError as e:
        return _fail(e)
    for path, reason in report.bad:
        print(f"BAD  {path}: {reason}")
    for path in report.temp_files:
        print(f"note leftover temp file from an interrupted write (ignored by readers): {path}")
    print(f"{report.num_episodes} good episode(s), {report.num_steps} steps, {len(report.bad)} bad file(s)")
    if report.num_episodes == 0 and not report.bad:
        print(f"error: {report.path} has no episodes", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_BAD_FILES


def run_import_minari(cfg: ImportMinariConfig) -> int:
    from atcrl.data.minari_bridge import import_minari

    try:
        with _minari_root(cfg.minari_root):
            out = import_minari(
                cfg.source,
                cfg.out,
                layout=cfg.layout,
                frame_channels=cfg.frame_channels,
                progress=_progress("import"),
            )
    except DatasetError as e:
        return _fail(e)
    print(f"wrote {out}")
    return EXIT_OK


def run_export_minari(cfg: ExportMinariConfig) -> int:
    from atcrl.data.minari_bridge import export_minari

    try:
        with _minari_root(cfg.minari_root):
            out = export_minari(cfg.path, cfg.id, data_format=cfg.data_format, progress=_progress("export"))
    except DatasetError as e:
        return _fail(e)
    print(f"wrote Minari dataset {cfg.id!r} at {out}")
    return EXIT_OK


COMMANDS: dict[str, tuple[type, Callable[..., int]]] = {
    "info": (InfoConfig, run_info),
    "validate": (ValidateConfig, run_validate),
    "import-minari": (ImportMinariConfig, run_import_minari),
    "export-minari": (ExportMinariConfig, run_export_minari),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as one ``dataset`` subcommand and run it; returns the exit code."""
    configs = {name: config_type for name, (config_type, _) in COMMANDS.items()}
    cfg = tyro.extras.subcommand_cli_from_dict(configs, args=argv, prog="atcrl dataset")
    runner = next(run for config_type, run in COMMANDS.values() if isinstance(cfg, config_type))
    return runner(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
