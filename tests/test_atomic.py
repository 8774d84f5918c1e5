"""The shared atomic write: all-or-nothing, its options, and the policy each caller keeps."""

from __future__ import annotations

import os
import stat

import pytest

from atcrl.atomic import TEMP_SUFFIX, atomic_write
from atcrl.data.dataset_files import atomic_write as dataset_atomic_write


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def half_then_fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_parents_and_mode_options(tmp_path):
    nested = tmp_path / "a" / "b" / "f.txt"
    assert atomic_write(nested, lambda f: f.write(b"x")) == nested and nested.read_bytes() == b"x"
    assert _mode(nested) == 0o600  # default: owner-only, like the temp file it was
    missing = tmp_path / "absent" / "g.txt"
    with pytest.raises(FileNotFoundError):
        atomic_write(missing, lambda f: f.write(b"x"), make_parents=False)
    shared = tmp_path / "h.txt"
    atomic_write(shared, lambda f: f.write(b"y"), mode=0o644)
    assert _mode(shared) == 0o644


def test_callers_keep_their_policies(tmp_path):
    # Run-side writes (checkpoints, config.json) create their directory; dataset writes are world-readable
    # and need the dataset directory to exist.
    ck = atomic_write(tmp_path / "run" / "c.json", lambda f: f.write(b"{}"))
    assert ck.read_bytes() == b"{}"
    with pytest.raises(FileNotFoundError):
        dataset_atomic_write(tmp_path / "nodir" / "meta.json", lambda f: f.write(b"{}"))
    meta = tmp_path / "meta.json"
    dataset_atomic_write(meta, lambda f: f.write(b"{}"))
    assert _mode(meta) == 0o644
