"""Episode datasets on disk: a directory with a versioned ``meta.json`` and one compressed file per episode.

The layout, every field and the crash-safety rules are specified in docs/dataset-format.md.
Files are only ever made visible by an atomic rename of a fully written, fsynced temp file,
so an interrupted writer leaves at worst a hidden ``*.tmp`` file that readers never look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from atcrl import __version__
from atcrl.data.episode import Episode

FORMAT_NAME = "atcrl-episodes"
FORMAT_VERSION = 1
"""The newest format version this atcrl writes and reads (it also reads every older one)."""
META_FILE = "meta.json"
EPISODE_DIR = "episodes"
TEMP_SUFFIX = ".tmp"
_EPISODE_RE = re.compile(r"^ep_(\d+)\.npz$")
_REQUIRED_ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated", "task")
# Everything a damaged zip/npy file can raise while being opened or decoded (numpy parses
# .npy headers as Python literals, so a damaged header surfaces as SyntaxError/TokenError).
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    ValueError,
    EOFError,
    OSError,
    KeyError,
    SyntaxError,
    tokenize.TokenError,
)

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` during long loops."""


class DatasetError(ValueError):
    """The dataset directory (or something written to it) is unusable; the message says why."""


class DatasetVersionError(DatasetError):
    """The dataset was written in a newer format version than this atcrl reads."""


class CorruptEpisodeError(DatasetError):
    """One episode file is truncated, damaged, or does not match the dataset's meta."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"corrupt episode file {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class DatasetMeta:
    """What every episode in a dataset shares; stored as ``meta.json``."""

    frame_shape: tuple[int, int, int]
    """[C, H, W] of one single frame (observations stack ``frame_stack`` of these along C)."""
    action_shape: tuple[int, ...]
    """Shape of one action: () for discrete actions, (A,) for continuous ones."""
    action_dtype: str
    """numpy dtype name of the actions: "int64" (discrete) or "float32" (continuous)."""
    frame_dtype: str = "uint8"
    """numpy dtype name of the frames: "uint8" pixels, or a float dtype for cached latent images."""
    num_actions: int | None = None
    """Size of a discrete action set, when known; None for continuous actions."""
    frame_stack: int = 1
    """How many frames the observations were stacked from when the data was collected."""
    action_repeat: int = 1
    """Env steps per recorded step (env steps = agent steps x action_repeat)."""
    physics_dim: int | None = None
    """Length of the per-frame physics state vector; None when episodes carry no physics."""
    tasks: tuple[str, ...] = ()
    """Task ids (env specs such as "dmc:cartpole-swingup") of the episodes; grows as episodes are added."""
    created_by: str = f"atcrl {__version__}"
    """Program and version that created the dataset."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-serialisable notes (collecting policy, seed, source dataset, ...)."""

    def __post_init__(self) -> None:
        # Accept lists from JSON; keep tuples so metas compare by value.
        object.__setattr__(self, "frame_shape", tuple(int(d) for d in self.frame_shape))
        object.__setattr__(self, "action_shape", tuple(int(d) for d in self.action_shape))
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        if len(self.frame_shape) != 3 or min(self.frame_shape) < 1:
            raise ValueError(f"frame_shape must be [C, H, W] of positive ints, got {self.frame_shape}")
        for name in ("frame_dtype", "action_dtype"):
            try:
                np.dtype(getattr(self, name))
            except TypeError as e:
                raise ValueError(f"{name} {getattr(self, name)!r} is not a numpy dtype") from e
        if self.num_actions is not None and (not self.discrete or self.num_actions < 1):
            raise ValueError(
                f"num_actions={self.num_actions} needs discrete (integer) actions and must be >= 1"
            )
        if self.frame_stack < 1 or self.action_repeat < 1:
            raise ValueError("frame_stack and action_repeat must be >= 1")
        if self.physics_dim is not None and self.physics_dim < 1:
            raise ValueError(f"physics_dim must be None or >= 1, got {self.physics_dim}")
        try:
            if not isinstance(self.extra, dict):
                raise TypeError(f"got {type(self.extra).__name__}")
            json.dumps(self.extra)
        except (TypeError, ValueError) as e:
            raise ValueError(f"extra must be a JSON-serialisable dict: {e}") from e

    @property
    def frame_channels(self) -> int:
        """Channels of one single frame."""
        return self.frame_shape[0]

    @property
    def discrete(self) -> bool:
        return bool(np.issubdtype(np.dtype(self.action_dtype), np.integer))

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        # frame_channels and discrete are derived, but written out for readers that only see the JSON.
        body.update(frame_channels=self.frame_channels, discrete=self.discrete)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **body}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: Path | str = META_FILE) -> DatasetMeta:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DatasetError(f"{source} is not an {FORMAT_NAME} meta file (format: {got!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DatasetError(f"{source}: format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise DatasetVersionError(
                f"{source} uses {FORMAT_NAME} format version {version} (written by "
                f"{data.get('created_by', 'an unknown program')}), but this atcrl ({__version__}) reads "
                f"versions up to {FORMAT_VERSION}. Upgrade atcrl (`pip install -U atcrl`, or pull the "
                "latest source and reinstall) to read it."
            )
        names = {f.name for f in fields(cls)}
        required = {"frame_shape", "action_shape", "action_dtype"}
        if missing := sorted(required - data.keys()):
            raise DatasetError(f"{source} lacks required field(s): {', '.join(missing)}")
        # Unknown keys are ignored: adding an optional field does not need a new format version.
        try:
            meta = cls(**{k: v for k, v in data.items() if k in names})
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{source}: {e}") from e
        for derived in ("frame_channels", "discrete"):
            if derived in data and data[derived] != getattr(meta, derived):
                raise DatasetError(f"{source}: {derived}={data[derived]!r} contradicts the other fields")
        return meta

    @classmethod
    def from_episode(cls, episode: Episode, **overrides: Any) -> DatasetMeta:
        """A meta whose shapes and dtypes are those of ``episode``; ``overrides`` set the other fields."""
        physics_dim = None if episode.physics is None else int(episode.physics.shape[1])
        derived = {
            "frame_shape": episode.frame_shape,
            "frame_dtype": episode.frames.dtype.name,
            "action_shape": tuple(episode.actions.shape[1:]),
            "action_dtype": episode.actions.dtype.name,
            "physics_dim": physics_dim,
            "tasks": (episode.task,),
        }
        return cls(**{**derived, **overrides})


def meta_from_env(env: Any, **overrides: Any) -> DatasetMeta:
    """A meta for episodes recorded from an atcrl env or vector env (made by ``atcrl.envs.make_env``)."""
    from atcrl.envs import env_meta  # imported here so reading datasets never needs the env stack

    info = env_meta(env)
    # Vector envs batch their spaces; the per-env ones are what one episode holds.
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    discrete = bool(info.discrete)
    derived = {
        "frame_shape": (int(info.frame_channels), *map(int, obs_space.shape[-2:])),
        "frame_dtype": np.dtype(obs_space.dtype).name,
        "action_shape": () if discrete else tuple(act_space.shape),
        "action_dtype": "int64" if discrete else "float32",
        "num_actions": int(act_space.n) if discrete else None,
        "frame_stack": int(info.frame_stack),
        "action_repeat": int(info.action_repeat),
        "physics_dim": info.physics_dim,
        "tasks": (str(info.spec),),
    }
    return DatasetMeta(**{**derived, **overrides})


# ---------------------------------------------------------------- atomic files


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``final`` so that it either appears complete or not at all, even on a crash."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def _write_meta(root: Path, meta: DatasetMeta) -> None:
    text = json.dumps(meta.to_json(), indent=2) + "\n"
    _atomic_write(root / META_FILE, lambda f: f.write(text.encode()))


def temp_files(root: Path | str) -> list[Path]:
    """Leftovers of interrupted writes (never read as data)."""
    root = Path(root)
    return sorted(p for d in (root, root / EPISODE_DIR) if d.is_dir() for p in d.glob(f".*{TEMP_SUFFIX}"))


def episode_files(root: Path | str) -> list[tuple[int, Path]]:
    """(index, path) of every episode file, in index order; temp files and strangers are ignored."""
    ep_dir = Path(root) / EPISODE_DIR
    if not ep_dir.is_dir():
        return []
    found = ((_EPISODE_RE.match(p.name), p) for p in ep_dir.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


# ---------------------------------------------------------------- checks shared by writing and reading


def _check_layout(specs: dict[str, tuple[tuple[int, ...], np.dtype]], meta: DatasetMeta) -> int:
    """Check array shapes/dtypes against each other and the meta; return T. Raises ValueError(reason)."""
    if missing := [n for n in _REQUIRED_ARRAYS if n not in specs]:
        raise ValueError(f"missing array(s) {', '.join(missing)}")

    def expect(name: str, shape: tuple[int, ...], dtype: str | np.dtype) -> None:
        got_shape, got_dtype = specs[name]
        if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dtype):
            raise ValueError(
                f"{name} is {np.dtype(got_dtype).name}{list(got_shape)}, "
                f"expected {np.dtype(dtype).name}{list(shape)} (from the dataset meta)"
            )

    steps = specs["actions"][0][0] if specs["actions"][0] else -1
    if steps < 0:
        raise ValueError("actions must have a leading time axis")
    expect("frames", (steps + 1, *meta.frame_shape), meta.frame_dtype)
    expect("actions", (steps, *meta.action_shape), meta.action_dtype)
    expect("rewards", (steps,), np.float32)
    expect("terminated", (), np.bool_)
    expect("truncated", (), np.bool_)
    if specs["task"][0] != () or np.dtype(specs["task"][1]).kind != "U":
        raise ValueError(f"task must be a 0-d string array, got {specs['task'][1]}{list(specs['task'][0])}")
    if meta.physics_dim is None:
        if "physics" in specs:
            raise ValueError("episode has physics but the dataset meta says physics_dim is null")
    elif "physics" not in specs:
        raise ValueError(f"episode lacks physics but the dataset meta says physics_dim={meta.physics_dim}")
    else:
        expect("physics", (steps + 1, meta.physics_dim), np.float64)
    return steps


def _check_values(arrays: dict[str, np.ndarray], meta: DatasetMeta) -> None:
    if meta.num_actions is not None and len(arrays["actions"]):
        low, high = int(arrays["actions"].min()), int(arrays["actions"].max())
        if low < 0 or high >= meta.num_actions:
            raise ValueError(f"discrete actions span [{low}, {high}], outside [0, {meta.num_actions})")
    if bool(arrays["terminated"]) and bool(arrays["truncated"]):
        raise ValueError("terminated and truncated are both set")


def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray], compresslevel: int) -> None:
    """An .npz archive (what np.savez_compressed writes) at a chosen zlib level; members carry CRC-32s."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _episode_arrays(episode: Episode) -> dict[str, np.ndarray]:
    arrays = {
        "frames": episode.frames,
        "actions": episode.actions,
        "rewards": episode.rewards,
        "terminated": np.array(bool(episode.terminated)),
        "truncated": np.array(bool(episode.truncated)),
        "task": np.array(str(episode.task)),
    }
    if episode.physics is not None:
        arrays["physics"] = episode.physics
    return arrays


# ---------------------------------------------------------------- writing


class DatasetWriter:
    """Adds episodes to a dataset directory, one atomically written file each.

    ``append=False`` creates a new dataset (the directory must not exist or be empty);
    ``append=True`` creates it if missing, otherwise checks ``meta`` against the stored
    meta and continues the episode numbering (a resumed collector). One writer at a time.
    ``compresslevel`` is the zlib level (readers do not care which was used); the default 6
    makes rendered frames 4-5x smaller than level 1 does, at about the same speed.
    """

    def __init__(
        self, path: Path | str, meta: DatasetMeta, *, append: bool = False, compresslevel: int = 6
    ) -> None:
        self.path = Path(path)
        self.compresslevel = compresslevel
        if (self.path / META_FILE).exists():
            if not append:
                raise DatasetError(f"{self.path} already holds a dataset; pass append=True to add to it")
            stored = read_meta(self.path)
            _check_compatible(stored, meta, self.path)
            self.meta = stored
            self._add_tasks(meta.tasks)
            for leftover in temp_files(self.path):  # the single writer's own crashed writes
                leftover.unlink(missing_ok=True)
            self._next = max((i for i, _ in episode_files(self.path)), default=-1) + 1
        else:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise DatasetError(
                    f"{self.path} exists and is not an atcrl dataset (no {META_FILE}); "
                    "refusing to write into it"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self.meta = meta
            _write_meta(self.path, meta)
            self._next = 0
        (self.path / EPISODE_DIR).mkdir(exist_ok=True)

    def _add_tasks(self, tasks: tuple[str, ...]) -> None:
        new = tuple(t for t in dict.fromkeys(tasks) if t not in self.meta.tasks)
        if new:
            self.meta = replace(self.meta, tasks=self.meta.tasks + new)
            _write_meta(self.path, self.meta)

    def add(self, episode: Episode) -> Path:
        """Write one episode; returns its file. Raises DatasetError if it does not fit the meta."""
        arrays = _episode_arrays(episode)
        try:
            _check_layout({k: (a.shape, a.dtype) for k, a in arrays.items()}, self.meta)
            _check_values(arrays, self.meta)
        except ValueError as e:
            raise DatasetError(f"cannot add episode to {self.path}: {e}") from e
        # The meta lists the task before any episode of it exists, so readers never see an unlisted task.
        self._add_tasks((episode.task,))
        final = self.path / EPISODE_DIR / f"ep_{self._next:06d}.npz"
        _atomic_write(final, lambda f: _write_npz(f, arrays, self.compresslevel))
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


# ---------------------------------------------------------------- reading


def read_meta(path: Path | str) -> DatasetMeta:
    """Read and check a dataset's meta; DatasetError says what is wrong with the directory."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"no dataset at {root}: the directory does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a dataset directory")
    meta_path = root / META_FILE
    if not meta_path.is_file():
        hint = ""
        if (root / "metadata.json").exists() or (root / "data" / "metadata.json").exists():
            hint = " It looks like a Minari dataset: convert it with `atcrl dataset import-minari`."
        raise DatasetError(f"{root} is not an atcrl dataset: it has no {META_FILE}.{hint}")
    try:
        data = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{meta_path} is not valid JSON ({e}); it was damaged or edited by hand") from e
    return DatasetMeta.from_json(data, source=meta_path)


def _member_header(zf: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy header version {version} in {name}")
    return tuple(shape), dtype


def _member_array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(name) as f:
        array = np.lib.format.read_array(f, allow_pickle=False)
        # Reading to the end of the member makes zipfile verify its CRC-32.
        if f.read(1):
            raise ValueError(f"{name} has trailing bytes")
    return array


def _array_names(zf: zipfile.ZipFile) -> dict[str, str]:
    return {n.removesuffix(".npy"): n for n in zf.namelist() if n.endswith(".npy")}


@dataclass(frozen=True)
class EpisodeSummary:
    """What a dataset scan learns about one episode without decompressing its frames."""

    index: int
    path: Path
    steps: int
    task: str
    episode_return: float
    terminated: bool
    truncated: bool
    nbytes: int
    """Bytes the episode's arrays take in RAM once loaded."""


_SMALL_ARRAYS = ("rewards", "terminated", "truncated", "task")


def summarize_episode(path: Path, meta: DatasetMeta, index: int = -1) -> EpisodeSummary:
    """Check an episode file's structure (zip directory, array headers, small arrays) against ``meta``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = _array_names(zf)
            specs = {k: _member_header(zf, n) for k, n in names.items()}
            steps = _check_layout(specs, meta)
            small = {k: _member_array(zf, names[k]) for k in _SMALL_ARRAYS}
    except _READ_ERRORS as e:
        raise CorruptEpisodeError(path, str(e) or type(e).__name__) from e
    task = str(small["task"])
    if meta.tasks and task not in meta.tasks:
        raise CorruptEpisodeError(path, f"task {task!r} is not among the dataset's tasks {list(meta.tasks)}")
    nbytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in specs.values())
    return EpisodeSummary(
        index=index,
        path=path,
        steps=steps,
        task=task,
        episode_return=float(small["rewards"].sum(dtype=np.float64)),
        terminated=bool(small["terminated"]),
        truncated=bool(small["truncated"]),
        nbytes=nbytes,
    )


def read_array(path: Path, name: str) -> np.ndarray:
    """Load one array of an episode file (CRC-checked) without touching the others."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _member_array(zf, f"{name}.npy")
    except _READ_ERRORS as e:
        raise CorruptEpisodeError(path, str(e) or type(e).__name__) from e


def read_episode(path: Path, meta: DatasetMeta) -> Episode:
    """Load one episode completely, verifying checksums, shapes and dtypes against ``meta``."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = _array_names(zf)
            # Headers first, so a damaged shape is reported instead of allocated.
            _check_layout({k: _member_header(zf, n) for k, n in names.items()}, meta)
            arrays = {k: _member_array(zf, n) for k, n in names.items()}
        _check_values(arrays, meta)
    except _READ_ERRORS as e:
        raise CorruptEpisodeError(path, str(e) or type(e).__name__) from e
    task = str(arrays["task"])
    if meta.tasks and task not in meta.tasks:
        raise CorruptEpisodeError(path, f"task {task!r} is not among the dataset's tasks {list(meta.tasks)}")
    return Episode(
        frames=arrays["frames"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminated=bool(arrays["terminated"]),
        truncated=bool(arrays["truncated"]),
        physics=arrays.get("physics"),
        task=task,
    )


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
        for summary in self.summaries:
            try:
                yield read_episode(summary.path, self.meta)
            except CorruptEpisodeError as e:
                if not self.skip_corrupt:
                    raise
                _skip(e, self.bad)

    def load_all(self, progress: Progress | None = None) -> list[Episode]:
        episodes = []
        for n, episode in enumerate(self, 1):
            episodes.append(episode)
            if progress:
                progress(n, len(self))
        return episodes


def _skip(error: CorruptEpisodeError, bad: list[tuple[Path, str]]) -> None:
    warnings.warn(f"skipping {error}", stacklevel=3)
    bad.append((error.path, error.reason))


def open_dataset(path: Path | str, *, skip_corrupt: bool = False) -> EpisodeDataset:
    """Open a dataset: read its meta and check every episode file's structure (frames stay on disk).

    A truncated or mismatched file raises CorruptEpisodeError naming it; with ``skip_corrupt``
    it is skipped with a warning and listed in ``.bad``. Damage inside the compressed frames
    is found when that episode is loaded (``read_episode`` checks the CRC-32 of every array).
    """
    root = Path(path)
    meta = read_meta(root)
    summaries: list[EpisodeSummary] = []
    bad: list[tuple[Path, str]] = []
    for index, file in episode_files(root):
        try:
            summaries.append(summarize_episode(file, meta, index))
        except CorruptEpisodeError as e:
            if not skip_corrupt:
                raise
            _skip(e, bad)
    if not summaries:
        skipped = f" ({len(bad)} corrupt file(s) skipped)" if bad else ""
        raise DatasetError(f"dataset {root} has no readable episodes{skipped}")
    return EpisodeDataset(root, meta, summaries, bad, skip_corrupt)


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
