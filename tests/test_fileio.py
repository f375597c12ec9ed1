"""Atomic writes: all or nothing, and as readable as any other new file."""

from __future__ import annotations

import os

import pytest

from ddbench.util.fileio import write_atomic, write_json_atomic


def test_atomic_write_replaces_the_file_and_respects_the_umask(tmp_path):
    target = tmp_path / "out" / "result.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert target.read_text().replace(" ", "").replace("\n", "") == '{"a":2}'
    mask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "shared.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(mask)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def dies(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(target, dies)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
