"""Episode datasets on disk: a directory with a versioned ``meta.json`` and one compressed file per episode.

The layout, every field and the crash-safety rules are specified in docs/dataset-format.md.
This module is the entry point: import from here. Each part lives in a module of its own:

- ``dataset_meta``:   DatasetMeta (what ``meta.json`` holds), meta_from_env, read_meta, format version, errors
- ``dataset_files``:  the directory layout (meta, episode and temp file names) and atomic file writes
- ``episode_npz``:    one episode as one ``.npz`` file: checks, cheap scan, full load
- ``dataset_writer``: DatasetWriter (new datasets and resumed appends)
- ``dataset_reader``: open_dataset(s) / EpisodeDataset (lazy loading), validate_dataset
"""

from __future__ import annotations

from atcrl.data.dataset_files import EPISODE_DIR, META_FILE, TEMP_SUFFIX, episode_files, temp_files
from atcrl.data.dataset_meta import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CorruptEpisodeError,
    DatasetError,
    DatasetMeta,
    DatasetVersionError,
    meta_from_env,
    read_meta,
)
from atcrl.data.dataset_reader import (
    EpisodeDataset,
    Progress,
    ValidationReport,
    open_dataset,
    open_datasets,
    validate_dataset,
)
from atcrl.data.dataset_writer import DatasetWriter
from atcrl.data.episode_npz import EpisodeSummary, read_array, read_episode, summarize_episode

__all__ = [
    "EPISODE_DIR",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "META_FILE",
    "TEMP_SUFFIX",
    "CorruptEpisodeError",
    "DatasetError",
    "DatasetMeta",
    "DatasetVersionError",
    "DatasetWriter",
    "EpisodeDataset",
    "EpisodeSummary",
    "Progress",
    "ValidationReport",
    "episode_files",
    "meta_from_env",
    "open_dataset",
    "open_datasets",
    "read_array",
    "read_episode",
    "read_meta",
    "summarize_episode",
    "temp_files",
    "validate_dataset",
]
