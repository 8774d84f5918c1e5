"""Reading a dataset: open it with a cheap scan of every episode file, load episodes lazily, or validate all."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from atcrl.data.dataset_files import episode_files, temp_files
from atcrl.data.dataset_meta import CorruptEpisodeError, DatasetError, DatasetMeta, read_meta
from atcrl.data.episode import Episode
from atcrl.data.episode_npz import EpisodeSummary, read_episode, summarize_episode

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` during long loops."""

_T = TypeVar("_T")


class EpisodeDataset:
    """A dataset opened for reading. Episodes are loaded from disk on access, not kept in RAM."""

    def __init__(
        self,
        path: Path,
        meta: DatasetMeta,
        summaries: list[EpisodeSummary],
        bad: list[tuple[Path, str]],
        skip_corrupt: bool,
    ) -> None:
        self.path = path
        self.meta = meta
        self.summaries = tuple(summaries)
        self.bad = bad
        """(file, reason) of every corrupt episode skipped so far (only with skip_corrupt)."""
        self.skip_corrupt = skip_corrupt

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(s.path for s in self.summaries)

    @property
    def num_steps(self) -> int:
        return sum(s.steps for s in self.summaries)

    @property
    def nbytes(self) -> int:
        """Bytes all episodes take in RAM once loaded (single frames, not stacks)."""
        return sum(s.nbytes for s in self.summaries)

    def __len__(self) -> int:
        return len(self.summaries)

    def __getitem__(self, i: int) -> Episode:
        return read_episode(self.summaries[i].path, self.meta)

    def __iter__(self) -> Iterator[Episode]:
        """Load episodes in order; with skip_corrupt, damaged ones are warned about and skipped."""
        calls = ((s.path, self.meta) for s in self.summaries)
        yield from _each_readable(read_episode, calls, self.skip_corrupt, self.bad)

    def load_all(self, progress: Progress | None = None) -> list[Episode]:
        episodes = []
        for n, episode in enumerate(self, 1):
            episodes.append(episode)
            if progress:
                progress(n, len(self))
        return episodes


def _each_readable(
    read: Callable[..., _T], calls: Iterable[tuple], skip_corrupt: bool, bad: list[tuple[Path, str]]
) -> Iterator[_T]:
    """``read(*args)`` for each ``args`` in ``calls``. A CorruptEpisodeError propagates, or with
    ``skip_corrupt`` is listed in ``bad`` and skipped with a warning pointing at the reading code."""
    for args in calls:
        try:
            yield read(*args)
        except CorruptEpisodeError as e:
            if not skip_corrupt:
                raise
            warnings.warn(f"skipping {e}", stacklevel=3)
            bad.append((e.path, e.reason))


def open_dataset(path: Path | str, *, skip_corrupt: bool = False) -> EpisodeDataset:
    """Open a dataset: read its meta and check every episode file's structure (frames stay on disk).

    A truncated or mismatched file raises CorruptEpisodeError naming it; with ``skip_corrupt``
    it is skipped with a warning and listed in ``.bad``. Damage inside the compressed frames
    is found when that episode is loaded (``read_episode`` checks the CRC-32 of every array).
    """
    root = Path(path)
    meta = read_meta(root)
    bad: list[tuple[Path, str]] = []
    calls = ((file, meta, index) for index, file in episode_files(root))
    summaries = list(_each_readable(summarize_episode, calls, skip_corrupt, bad))
    if not summaries:
        skipped = f" ({len(bad)} corrupt file(s) skipped)" if bad else ""
        raise DatasetError(f"dataset {root} has no readable episodes{skipped}")
    return EpisodeDataset(root, meta, summaries, bad, skip_corrupt)


def open_datasets(paths: Iterable[Path | str], *, skip_corrupt: bool, command: str) -> list[EpisodeDataset]:
    """``open_dataset`` for a command's inputs: a damaged file (or one holding NaN/Inf) stops ``atcrl command``
    with a DatasetError naming it and ``--skip-corrupt``; with ``skip_corrupt`` each one left out is
    named on stderr."""
    datasets = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # skipped files are reported below, one line each
                ds = open_dataset(path, skip_corrupt=skip_corrupt)
        except CorruptEpisodeError as e:
            raise DatasetError(f"{e}; pass --skip-corrupt to leave such files out") from e
        for file, reason in ds.bad:
            print(f"atcrl {command}: skipping {file}: {reason} (--skip-corrupt)", file=sys.stderr)
        datasets.append(ds)
    return datasets


@dataclass(frozen=True)
class ValidationReport:
    path: Path
    meta: DatasetMeta
    num_episodes: int
    """Episodes that loaded completely and matched the meta."""
    num_steps: int
    bad: tuple[tuple[Path, str], ...]
    """(file, reason) of every episode file that failed."""
    temp_files: tuple[Path, ...]
    """Leftovers of interrupted writes; harmless (never read) but worth deleting."""

    @property
    def ok(self) -> bool:
        return not self.bad and self.num_episodes > 0


def validate_dataset(path: Path | str, progress: Progress | None = None) -> ValidationReport:
    """Fully load every episode file. Dataset-level problems (missing dir, bad meta) raise DatasetError."""
    root = Path(path)
    meta = read_meta(root)
    files = episode_files(root)
    good, steps, bad = 0, 0, []
    for n, (_, file) in enumerate(files, 1):
        try:
            steps += len(read_episode(file, meta))
            good += 1
        except CorruptEpisodeError as e:
            bad.append((e.path, e.reason))
        if progress:
            progress(n, len(files))
    return ValidationReport(root, meta, good, steps, tuple(bad), tuple(temp_files(root)))
