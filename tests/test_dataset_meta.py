"""Dataset metas: versioning (newer formats refused with an upgrade hint), bad metas, episodes that do not match."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_dataset import make_episode, meta_for, write_dataset

from atcrl.data.dataset_meta import (
    FORMAT_VERSION,
    CorruptEpisodeError,
    DatasetError,
    DatasetMeta,
    DatasetVersionError,
)
from atcrl.data.dataset_reader import open_dataset


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _edit_meta(root: Path, **changes) -> None:
    data = json.loads((root / "meta.json").read_text())
    data.update(changes)
    (root / "meta.json").write_text(json.dumps(data))


def test_newer_format_version_is_refused_with_upgrade_hint(tmp_path, rng):
    write_dataset(tmp_path / "ds", [make_episode(rng)])
    _edit_meta(tmp_path / "ds", format_version=FORMAT_VERSION + 1)
    with pytest.raises(DatasetVersionError) as info:
        open_dataset(tmp_path / "ds")
    message = str(info.value)
    assert f"version {FORMAT_VERSION + 1}" in message and f"up to {FORMAT_VERSION}" in message
    assert "Upgrade atcrl" in message


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format": "something-else"}, "not an atcrl-episodes meta"),
        ({"format_version": "1"}, "format_version must be a positive integer"),
        ({"frame_shape": [3, 16]}, "frame_shape"),
        ({"frame_channels": 4}, "frame_channels=4 contradicts"),
        ({"discrete": False}, "discrete=False contradicts"),
        ({"action_dtype": "int65"}, "not a numpy dtype"),
    ],
)
def test_bad_meta_is_a_clear_error(tmp_path, rng, changes, match):
    write_dataset(tmp_path / "ds", [make_episode(rng)])
    _edit_meta(tmp_path / "ds", **changes)
    with pytest.raises(DatasetError, match=match):
        open_dataset(tmp_path / "ds")


def test_meta_missing_fields_and_broken_json(tmp_path, rng):
    write_dataset(tmp_path / "ds", [make_episode(rng)])
    meta_path = tmp_path / "ds" / "meta.json"
    data = json.loads(meta_path.read_text())
    del data["action_shape"]
    meta_path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="lacks required field.*action_shape"):
        open_dataset(tmp_path / "ds")
    meta_path.write_text("{ not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset(tmp_path / "ds")


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"frame_shape": [3, 8, 8]}, r"frames is uint8\[13, 3, 16, 16\], expected uint8\[13, 3, 8, 8\]"),
        ({"frame_dtype": "float32"}, "frames is uint8"),
        ({"action_dtype": "int32"}, "actions is int64"),
        ({"physics_dim": 5}, "lacks physics"),
        ({"num_actions": 2}, r"outside \[0, 2\)"),
        ({"tasks": ["other"]}, "not among the dataset's tasks"),
    ],
)
def test_episode_not_matching_meta_is_reported(tmp_path, rng, changes, match):
    (path,) = write_dataset(tmp_path / "ds", [make_episode(rng, 12)])
    _edit_meta(tmp_path / "ds", **changes)
    with pytest.raises(CorruptEpisodeError, match=match) as info:
        open_dataset(tmp_path / "ds").load_all()
    assert info.value.path == path


def test_meta_json_round_trip(rng):
    meta = meta_for(make_episode(rng, physics=True), frame_stack=3, tasks=("a", "b"), extra={"k": [1, 2]})
    assert DatasetMeta.from_json(json.loads(json.dumps(meta.to_json()))) == meta
    with pytest.raises(ValueError, match="JSON-serialisable"):
        DatasetMeta(frame_shape=(3, 4, 4), action_shape=(), action_dtype="int64", extra={"x": object()})
    with pytest.raises(ValueError, match="num_actions"):
        DatasetMeta(frame_shape=(3, 4, 4), action_shape=(2,), action_dtype="float32", num_actions=3)
