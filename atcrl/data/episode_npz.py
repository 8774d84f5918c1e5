"""One episode as one compressed ``.npz`` archive: writing it, scanning it cheaply, loading it in full.

Every way in checks the arrays against the dataset meta (docs/dataset-format.md lists the rules), and
every read surfaces damage as CorruptEpisodeError naming the file, never as a half-loaded episode.
"""

from __future__ import annotations

import contextlib
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from atcrl.data.dataset_meta import CorruptEpisodeError, DatasetMeta
from atcrl.data.episode import Episode

_REQUIRED_ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated", "task")
_SMALL_ARRAYS = ("actions", "rewards", "terminated", "truncated", "task")
"""Arrays a scan loads (with physics when present): all but the frames."""
_FLOAT_KINDS = "fc"
# Everything a damaged zip/npy file can raise while being opened or decoded (numpy parses
# .npy headers as Python literals, so a damaged header surfaces as SyntaxError/TokenError; a
# damaged zip directory can claim a zip version or compression method zipfile does not implement,
# or an encrypted member, which zipfile reports as RuntimeError).
_READ_ERRORS = (
    zipfile.BadZipFile,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    ValueError,
    EOFError,
    OSError,
    KeyError,
    SyntaxError,
    tokenize.TokenError,
)


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


def _check_finite(arrays: dict[str, np.ndarray]) -> None:
    """ValueError naming the array, the count and the index of the first NaN/Inf of any float array."""
    for name, array in arrays.items():
        if array.dtype.kind not in _FLOAT_KINDS:
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} holds {int(bad.sum())} non-finite value(s) (NaN/Inf); the first, "
                             f"{array[first]}, at index {list(first)}")


def _check_values(arrays: dict[str, np.ndarray], meta: DatasetMeta) -> None:
    _check_finite(arrays)
    if meta.num_actions is not None and len(arrays["actions"]):
        low, high = int(arrays["actions"].min()), int(arrays["actions"].max())
        if low < 0 or high >= meta.num_actions:
            raise ValueError(f"discrete actions span [{low}, {high}], outside [0, {meta.num_actions})")
    if bool(arrays["terminated"]) and bool(arrays["truncated"]):
        raise ValueError("terminated and truncated are both set")


def _checked_task(task: np.ndarray, meta: DatasetMeta) -> str:
    # Only readers check this: a writer adds a new task to the meta before writing its first episode.
    name = str(task)
    if meta.tasks and name not in meta.tasks:
        raise ValueError(f"task {name!r} is not among the dataset's tasks {list(meta.tasks)}")
    return name


# ---------------------------------------------------------------- writing


def episode_arrays(episode: Episode, meta: DatasetMeta) -> dict[str, np.ndarray]:
    """The arrays stored for ``episode``, checked against ``meta`` (ValueError says what does not fit)."""
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
    _check_layout({k: (a.shape, a.dtype) for k, a in arrays.items()}, meta)
    _check_values(arrays, meta)
    return arrays


def write_npz(f: IO[bytes], arrays: dict[str, np.ndarray], compresslevel: int) -> None:
    """An .npz archive (what np.savez_compressed writes) at a chosen zlib level; members carry CRC-32s."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


# ---------------------------------------------------------------- reading


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[zipfile.ZipFile]:
    """Open an episode file; any damage or mismatch found inside the block becomes CorruptEpisodeError."""
    try:
        with zipfile.ZipFile(path) as zf:
            yield zf
    except _READ_ERRORS as e:
        raise CorruptEpisodeError(path, str(e) or type(e).__name__) from e


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


def summarize_episode(path: Path, meta: DatasetMeta, index: int = -1) -> EpisodeSummary:
    """Check an episode file's structure (zip directory, array headers) and every array but the frames
    (values, NaN/Inf) against ``meta``."""
    with _reading(path) as zf:
        names = _array_names(zf)
        specs = {k: _member_header(zf, n) for k, n in names.items()}
        steps = _check_layout(specs, meta)
        small = {k: _member_array(zf, names[k]) for k in (*_SMALL_ARRAYS, "physics") if k in names}
        _check_finite(small)
        task = _checked_task(small["task"], meta)
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
    with _reading(path) as zf:
        return _member_array(zf, f"{name}.npy")


def read_episode(path: Path, meta: DatasetMeta) -> Episode:
    """Load one episode completely, verifying checksums, shapes and dtypes against ``meta``."""
    path = Path(path)
    with _reading(path) as zf:
        names = _array_names(zf)
        # Headers first, so a damaged shape is reported instead of allocated.
        _check_layout({k: _member_header(zf, n) for k, n in names.items()}, meta)
        arrays = {k: _member_array(zf, n) for k, n in names.items()}
        _check_values(arrays, meta)
        task = _checked_task(arrays["task"], meta)
    return Episode(
        frames=arrays["frames"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminated=bool(arrays["terminated"]),
        truncated=bool(arrays["truncated"]),
        physics=arrays.get("physics"),
        task=task,
    )
