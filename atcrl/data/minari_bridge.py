"""Convert between atcrl episode datasets and Minari, the gymnasium ecosystem's offline-data standard.

Minari datasets live under a local root (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``).
Nothing here downloads: import reads a dataset that is already on disk. See docs/dataset-format.md.
"""

from __future__ import annotations

import inspect
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from atcrl.data.dataset_meta import DatasetError, DatasetMeta
from atcrl.data.dataset_reader import EpisodeDataset, Progress, open_dataset
from atcrl.data.dataset_writer import DatasetWriter
from atcrl.data.episode import Episode
from atcrl.data.episode_npz import read_array
from atcrl.output_guard import protected_owner

Layout = Literal["auto", "chw", "hwc"]
ATCRL_META_KEY = "atcrl_meta"
"""Key of the Minari dataset metadata under which an export keeps the full atcrl meta."""


def _minari() -> Any:
    try:
        import minari
    except ImportError as e:
        raise DatasetError("Minari is not installed: pip install 'atcrl[minari]'") from e
    return minari


# ---------------------------------------------------------------- export


def export_minari(
    source: Path | str | EpisodeDataset,
    dataset_id: str,
    *,
    data_format: Literal["hdf5", "arrow"] = "hdf5",
    progress: Progress | None = None,
) -> Path:
    """Write an atcrl dataset as a local Minari dataset ``dataset_id``; returns its directory.

    Observations are the single frames as a Box of shape [C, H, W]; per-step infos carry
    ``physics`` ([T+1, S]) when the episodes have it; each episode's metadata carries ``task``;
    the dataset metadata keeps the whole atcrl meta under ``atcrl_meta`` so an import restores it.
    """
    minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError) as e:
        raise DatasetError(
            f"bad Minari dataset id {dataset_id!r}: ids look like 'name-v0' or 'namespace/name-v0'"
        ) from e
    ds = source if isinstance(source, EpisodeDataset) else open_dataset(source)
    meta = ds.meta
    if ds.summaries and min(s.steps for s in ds.summaries) == 0:
        raise DatasetError(f"{ds.path} holds an episode with no steps, which Minari cannot store")
    target = get_dataset_path(dataset_id)
    if target.exists():
        raise DatasetError(f"a Minari dataset {dataset_id!r} already exists at {target}; pick another id")
    if (owner := protected_owner(target)) is not None:
        raise DatasetError(f"the Minari root puts {dataset_id!r} at {target}, inside the {owner[1]} {owner[0]}; "
                           "choose a --minari-root outside it")

    spaces = {"observation_space": _frame_space(meta), "action_space": _action_space(ds)}
    create = minari.create_dataset_from_buffers
    # Lossless storage: some Minari versions JPEG-encode image observations unless told not to.
    lossless = {"jpeg_encoding": False} if "jpeg_encoding" in inspect.signature(create).parameters else {}
    created, tasks = None, []
    try:
        for n, episode in enumerate(ds, 1):
            buffer = _episode_buffer(EpisodeBuffer, episode)
            if created is None:
                with warnings.catch_warnings():
                    # Minari nags about provenance fields (author, e-mail, code link) it cannot know here.
                    warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None)")
                    created = create(
                        dataset_id,
                        [buffer],
                        algorithm_name="atcrl",
                        data_format=data_format,
                        description=f"Exported from an atcrl episode dataset (tasks: {', '.join(meta.tasks)}).",
                        **spaces,
                        **lossless,
                    )
            else:
                created.update_dataset_from_buffer([buffer])
            tasks.append(episode.task)
            if progress:
                progress(n, len(ds))
        assert created is not None, "open_dataset guarantees at least one episode"
        created.storage.update_episode_metadata([{"task": t} for t in tasks], range(len(tasks)))
        created.storage.update_metadata({ATCRL_META_KEY: meta.to_json()})
    except BaseException as e:
        # A half-written Minari dataset would block a retry under the same id.
        if target.exists():
            shutil.rmtree(target)
        if isinstance(e, ImportError):  # the storage backend (h5py / pyarrow) is an optional extra of Minari
            raise DatasetError(f"cannot write a Minari dataset in {data_format} format: {e}") from e
        raise
    return Path(target)


def _frame_space(meta: DatasetMeta) -> Any:
    import gymnasium as gym

    if np.dtype(meta.frame_dtype) == np.uint8:
        return gym.spaces.Box(0, 255, meta.frame_shape, np.uint8)
    return gym.spaces.Box(-np.inf, np.inf, meta.frame_shape, np.dtype(meta.frame_dtype))


def _action_space(ds: EpisodeDataset) -> Any:
    import gymnasium as gym

    meta = ds.meta
    if not meta.discrete:
        return gym.spaces.Box(-np.inf, np.inf, meta.action_shape, np.dtype(meta.action_dtype))
    if meta.action_shape != ():
        raise DatasetError(
            f"cannot export discrete actions of shape {meta.action_shape} to Minari "
            "(only scalar Discrete actions are supported)"
        )
    n = meta.num_actions or 1 + max(int(read_array(p, "actions").max(initial=0)) for p in ds.paths)
    return gym.spaces.Discrete(n)


def _episode_buffer(buffer_type: type, episode: Episode) -> Any:
    steps = len(episode)
    last = np.arange(steps) == steps - 1
    return buffer_type(
        observations=episode.frames,
        actions=episode.actions,
        rewards=episode.rewards,
        terminations=last & episode.terminated,
        truncations=last & episode.truncated,
        infos=None if episode.physics is None else {"physics": episode.physics},
    )


# ---------------------------------------------------------------- import


def import_minari(
    source: str | Path,
    out: Path | str,
    *,
    layout: Layout = "auto",
    frame_channels: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Convert a local Minari dataset with image observations into an atcrl dataset at ``out``.

    ``source`` is a Minari dataset id (looked up under MINARI_DATASETS_PATH) or a directory.
    Observations may be [H, W], [C, H, W], [H, W, C] (``layout`` picks, "auto" guesses from
    the smallest axis), or frame stacks: [k, ...] 4-d arrays, or k frames concatenated along the
    channel axis, detected by each stack being the previous one shifted by one frame (or set by
    ``frame_channels``). A stack keeps only its newest frame, the others being earlier frames.
    """
    mds = _load(source)
    obs_space, act_space = mds.observation_space, mds.action_space
    if not hasattr(obs_space, "shape") or obs_space.shape is None or len(obs_space.shape) not in (2, 3, 4):
        raise DatasetError(
            f"Minari dataset {source!r} has observation space {obs_space}; "
            "atcrl imports image observations (a Box of 2, 3 or 4 dims)"
        )
    to_channels, stacked_channels = _channel_stack(tuple(obs_space.shape), layout)
    stored = mds.storage.metadata.get(ATCRL_META_KEY)
    stored_meta = DatasetMeta.from_json(stored, source=f"{source} ({ATCRL_META_KEY})") if stored else None
    channels = frame_channels or stacked_channels or (stored_meta and stored_meta.frame_channels)
    tasks = [m.get("task") for m in mds.storage.get_episode_metadata(mds.episode_indices)]
    default_task = f"gym:{mds.env_spec.id}" if mds.env_spec is not None else f"minari:{mds.id}"

    writer = None
    for n, raw in enumerate(mds.iterate_episodes(), 1):
        obs = to_channels(np.asarray(raw.observations))
        if channels is None:
            channels = _detect_frame_channels(obs)
        episode = _episode(
            raw, _newest_frames(obs, channels, source), act_space, tasks[n - 1] or default_task
        )
        if writer is None:
            meta = stored_meta or _meta_for(episode, act_space, obs.shape[1] // channels, mds.id)
            writer = DatasetWriter(out, meta)
        writer.add(episode)
        if progress:
            progress(n, len(mds))
    if writer is None:
        raise DatasetError(f"Minari dataset {source!r} has no episodes")
    return writer.path


def _load(source: str | Path) -> Any:
    minari = _minari()
    path = Path(source)
    try:
        if path.is_dir():
            data = path / "data" if (path / "data" / "metadata.json").is_file() else path
            if not (data / "metadata.json").is_file():
                raise DatasetError(f"{path} is not a Minari dataset (no metadata.json or data/metadata.json)")
            return minari.MinariDataset(data)
        try:
            return minari.load_dataset(str(source))
        except FileNotFoundError as e:
            from minari.storage import get_dataset_path

            root = get_dataset_path()
            raise DatasetError(
                f"no local Minari dataset {str(source)!r} under {root} (set "
                "MINARI_DATASETS_PATH or pass the dataset's directory; nothing is downloaded)"
            ) from e
    except ImportError as e:  # the storage backend (h5py / pyarrow) is an optional extra of Minari
        raise DatasetError(f"cannot read Minari dataset {str(source)!r}: {e}") from e


def _channel_stack(shape: tuple[int, ...], layout: Layout) -> tuple[Any, int | None]:
    """A function mapping observations [T+1, *shape] to [T+1, n, H, W], and the frame channels if known."""
    if len(shape) == 2:
        return (lambda o: o[:, None]), 1
    image = shape[-3:]
    if layout == "auto":
        if image[2] < min(image[0], image[1]):
            layout = "hwc"
        elif image[0] < min(image[1], image[2]):
            layout = "chw"
        else:
            raise DatasetError(
                f"cannot tell the channel axis of observations {shape}; pass layout 'chw' or 'hwc'"
            )
    if len(shape) == 3:
        return ((lambda o: o.transpose(0, 3, 1, 2)) if layout == "hwc" else (lambda o: o)), None
    # [k, ...] stacks: concatenate the k frames along channels, oldest first.
    channels = shape[3] if layout == "hwc" else shape[1]
    if layout == "hwc":
        return (lambda o: o.transpose(0, 1, 4, 2, 3).reshape(len(o), -1, *o.shape[2:4])), channels
    return (lambda o: o.reshape(len(o), -1, *o.shape[3:])), channels


def _is_stack(obs: np.ndarray, channels: int) -> bool:
    """True if each observation is the previous one shifted by one frame of ``channels`` channels."""
    return bool(np.array_equal(obs[1:, :-channels], obs[:-1, channels:]))


def _detect_frame_channels(obs: np.ndarray) -> int:
    n = obs.shape[1]
    if n in (1, 3) or len(obs) < 2:
        return n
    if np.array_equal(obs[1:], obs[:-1]):
        raise DatasetError(
            "the first episode's observations never change, so frame stacking cannot be "
            "detected; pass frame_channels"
        )
    return next((c for c in (3, 1) if n % c == 0 and n > c and _is_stack(obs, c)), n)


def _newest_frames(obs: np.ndarray, channels: int, source: str | Path) -> np.ndarray:
    n = obs.shape[1]
    if n % channels:
        raise DatasetError(f"observations have {n} channels, not a multiple of frame_channels={channels}")
    if n == channels:
        return obs
    if not _is_stack(obs, channels):
        raise DatasetError(
            f"observations of {source!r} with {n} channels are not stacks of "
            f"{channels}-channel frames (oldest first) in every episode"
        )
    return np.ascontiguousarray(obs[:, -channels:])


def _episode(raw: Any, frames: np.ndarray, act_space: Any, task: str) -> Episode:
    import gymnasium as gym

    if isinstance(act_space, gym.spaces.Discrete):
        # atcrl numbers discrete actions from 0 whatever the space's start.
        actions = np.asarray(raw.actions, dtype=np.int64) - int(act_space.start)
    elif isinstance(act_space, gym.spaces.Box):
        actions = np.asarray(raw.actions, dtype=np.float32)
    else:
        raise DatasetError(
            f"unsupported action space {act_space}: atcrl datasets hold Discrete or Box actions"
        )
    steps = len(raw.rewards)
    physics = (raw.infos or {}).get("physics")
    if physics is not None:
        physics = np.asarray(physics, dtype=np.float64)
        if physics.ndim != 2 or len(physics) != steps + 1:
            physics = None  # not our per-frame physics layout: leave it out rather than guess
    terminated = bool(steps and raw.terminations[-1])
    return Episode(
        frames=frames,
        actions=actions,
        rewards=np.asarray(raw.rewards, dtype=np.float32),
        # A true terminal wins when both flags are set: it is the one that forbids bootstrapping.
        terminated=terminated,
        truncated=bool(steps and raw.truncations[-1]) and not terminated,
        physics=physics,
        task=str(task),
    )


def _meta_for(episode: Episode, act_space: Any, frame_stack: int, dataset_id: str) -> DatasetMeta:
    num_actions = int(act_space.n) if hasattr(act_space, "n") else None
    return DatasetMeta.from_episode(
        episode,
        num_actions=num_actions,
        frame_stack=frame_stack,
        tasks=(),
        extra={"source": f"minari:{dataset_id}"},
    )
