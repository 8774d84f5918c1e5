"""Writing a dataset: a new directory, or appending to one, one atomically written episode file at a time."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from atcrl.data.dataset_files import (
    EPISODE_DIR,
    META_FILE,
    atomic_write,
    episode_files,
    episode_path,
    temp_files,
)
from atcrl.data.dataset_meta import DatasetError, DatasetMeta, read_meta, write_meta
from atcrl.data.episode import Episode
from atcrl.data.episode_npz import episode_arrays, write_npz
from atcrl.runlock import empty_but_lock, lock_dir


class DatasetWriter:
    """Adds episodes to a dataset directory, one atomically written file each.

    ``append=False`` creates a new dataset (the directory must not exist or be empty);
    ``append=True`` creates it if missing, otherwise checks ``meta`` against the stored
    meta and continues the episode numbering (a resumed collector). One writer at a time: the writer
    holds the directory's lock (``atcrl.runlock``) until ``close()``, and a second one is refused.
    ``compresslevel`` is the zlib level (readers do not care which was used); the default 6
    makes rendered frames 4-5x smaller than level 1 does, at about the same speed.
    """

    def __init__(
        self, path: Path | str, meta: DatasetMeta, *, append: bool = False, compresslevel: int = 6
    ) -> None:
        self.path = Path(path)
        self.compresslevel = compresslevel
        # Refuse what can be refused without writing, then take the lock and decide again under it.
        self._check_target(append)
        self._lock = lock_dir(self.path, what="dataset")
        self._check_target(append)
        if (self.path / META_FILE).exists():
            stored = read_meta(self.path)
            _check_compatible(stored, meta, self.path)
            self.meta = stored
            self._add_tasks(meta.tasks)
            for leftover in temp_files(self.path):  # the single writer's own crashed writes
                leftover.unlink(missing_ok=True)
            self._next = max((i for i, _ in episode_files(self.path)), default=-1) + 1
        else:
            self.meta = meta
            write_meta(self.path, meta)
            self._next = 0
        (self.path / EPISODE_DIR).mkdir(exist_ok=True)

    def _check_target(self, append: bool) -> None:
        if (self.path / META_FILE).exists():
            if not append:
                raise DatasetError(f"{self.path} already holds a dataset; pass append=True to add to it")
        elif self.path.exists() and (not self.path.is_dir() or not empty_but_lock(self.path)):
            raise DatasetError(
                f"{self.path} exists and is not an atcrl dataset (no {META_FILE}); refusing to write into it"
            )

    def close(self) -> None:
        """Give the directory's writer lock back (also done when the writer is garbage-collected)."""
        self._lock.release()

    def _add_tasks(self, tasks: tuple[str, ...]) -> None:
        new = tuple(t for t in dict.fromkeys(tasks) if t not in self.meta.tasks)
        if new:
            self.meta = replace(self.meta, tasks=self.meta.tasks + new)
            write_meta(self.path, self.meta)

    def add(self, episode: Episode) -> Path:
        """Write one episode; returns its file. Raises DatasetError if it does not fit the meta."""
        try:
            arrays = episode_arrays(episode, self.meta)
        except ValueError as e:
            raise DatasetError(f"cannot add episode to {self.path}: {e}") from e
        # The meta lists the task before any episode of it exists, so readers never see an unlisted task.
        self._add_tasks((episode.task,))
        final = episode_path(self.path, self._next)
        atomic_write(final, lambda f: write_npz(f, arrays, self.compresslevel))
        self._next += 1
        return final


def _check_compatible(stored: DatasetMeta, given: DatasetMeta, path: Path) -> None:
    ignored = {"tasks", "created_by", "extra"}
    diffs = [
        f"{f.name}: dataset has {getattr(stored, f.name)!r}, writer was given {getattr(given, f.name)!r}"
        for f in fields(DatasetMeta)
        if f.name not in ignored and getattr(stored, f.name) != getattr(given, f.name)
    ]
    if diffs:
        raise DatasetError(f"cannot append to {path}, its meta differs: " + "; ".join(diffs))
