"""Crash-safe writes: a failed write leaves the old file and no temporary behind."""
from pathlib import Path

import pytest

from vlkd_formats.atomic_io import atomic_write, atomic_write_json, atomic_write_text


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "old")
    atomic_write_json(path, {"b": 1, "a": [2]})
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def half_then_crash(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
