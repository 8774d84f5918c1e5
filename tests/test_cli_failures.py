"""Every failure is one clear line at the `atcrl` boundary (the traceback behind --debug / ATCRL_DEBUG=1),
with the exit codes docs/reliability.md lists; and the small things: group help, quoted hints, units."""

from __future__ import annotations

import errno
import os
import re
from collections import namedtuple
from pathlib import Path

import pytest
from reltools import ROOT, one_line_error, point_dataset, run

from atcrl import atomic, failures
from atcrl.checkpoint import list_checkpoints, load_checkpoint
from atcrl.cli import main as atcrl

FakeStatvfs = namedtuple("FakeStatvfs", "f_bavail f_frsize")


@pytest.fixture(scope="module")
def point(tmp_path_factory) -> Path:
    return point_dataset(tmp_path_factory.mktemp("d") / "point")


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(data), "--out", str(out), "--updates", "4", "--ckpt-every", "2",
            "--batch-size", "16", "--val-fraction", "0", "--no-tensorboard", *extra]


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_good_one(point, tmp_path, capsys, monkeypatch):
    import torch

    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f)
        f.write(b"PK\x03\x04 part of a checkpoint")
        monkeypatch.setattr(os, "statvfs", lambda path: FakeStatvfs(f_bavail=3, f_frsize=4096))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    assert atcrl(pretrain_args(point, tmp_path / "run")) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "no space left on the device writing" in line and "ckpt_000004.pt" in line and "intact" in line
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [2]
    load_checkpoint(tmp_path / "run" / "checkpoints", kind="pretrain")
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


def test_an_unwritable_out_is_one_line_for_every_writer(point, tmp_path, capsys, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(atomic.os, "replace", refuse)  # root writes anywhere: make renames fail instead
    for argv in (["collect", "--env", "tiny:point", "--image-size", "16", "--episodes", "1", "--out",
                  str(tmp_path / "d")], pretrain_args(point, tmp_path / "run")):
        assert atcrl(argv) == 1
        line = one_line_error(capsys.readouterr().err)
        assert f"cannot write {tmp_path}" in line and "Permission denied" in line and "--out" in line


def test_traceback_only_with_debug(point, tmp_path, capsys, monkeypatch):
    args = pretrain_args(point, tmp_path / "a", "--lr", "1e30")
    assert atcrl(args) == failures.EXIT_DIVERGED
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(FloatingPointError):
        atcrl(["--debug", *pretrain_args(point, tmp_path / "b", "--lr", "1e30")])
    monkeypatch.setenv("ATCRL_DEBUG", "1")
    with pytest.raises(FloatingPointError):
        atcrl(pretrain_args(point, tmp_path / "c", "--lr", "1e30"))


def test_dataset_help_lists_its_subcommands_and_unknown_commands_are_usage_errors(capsys):
    for argv in (["dataset", "--help"], ["dataset"], ["dataset", "-h"]):
        assert atcrl(argv) == 0
        out = capsys.readouterr().out
        assert all(f"dataset {sub}" in out for sub in ("info", "validate", "import-minari", "export-minari"))
        assert "pretrain" not in out
    with pytest.raises(SystemExit) as stop:
        atcrl(["datset", "info"])
    assert stop.value.code == failures.EXIT_BAD_INPUT and "Did you mean: dataset info" in capsys.readouterr().err


def test_long_delta_t_warns_that_few_pairs_are_valid(point, tmp_path, capsys):
    assert atcrl(pretrain_args(point, tmp_path / "run", "--delta-t", "49")) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: only \d+% of the sampled pairs are valid: delta_t=49", err), err
    assert atcrl(pretrain_args(point, tmp_path / "ok", "--delta-t", "3")) == 0
    assert "pairs are valid" not in capsys.readouterr().err


def test_hints_are_shell_quoted_and_collect_counts_episodes(tmp_path):
    out = tmp_path / "my data"
    result = run(["collect", "--env", "tiny:point", "--image-size", "16", "--episodes", "2", "--out", out])
    assert result.returncode == 0
    assert f"`atcrl dataset info '{out}'`" in result.stderr
    assert "episode/s" in result.stderr and "upd/s" not in result.stderr


def test_the_documented_exit_codes_are_the_ones_the_code_uses():
    table = (ROOT / "docs" / "reliability.md").read_text()
    for name in ("EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_INTERRUPTED"):
        assert re.search(rf"^\| `{getattr(failures, name)}` \|", table, re.MULTILINE), name
