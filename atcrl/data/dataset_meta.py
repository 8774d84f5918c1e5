"""A dataset's ``meta.json`` (what every episode shares, and the format version) and the dataset errors.

The fields and the versioning rule are specified in docs/dataset-format.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from atcrl.data.dataset_files import META_FILE, atomic_write
from atcrl.data.episode import Episode
from atcrl.version import __version__

FORMAT_NAME = "atcrl-episodes"
FORMAT_VERSION = 1
"""The newest format version this atcrl writes and reads (it also reads every older one)."""


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


def write_meta(root: Path, meta: DatasetMeta) -> None:
    """Replace the meta of the dataset at ``root`` atomically."""
    text = json.dumps(meta.to_json(), indent=2) + "\n"
    atomic_write(root / META_FILE, lambda f: f.write(text.encode()))
