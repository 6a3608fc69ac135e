"""Sharded runs: settings guard, torn part lines, merging, and worker processes with their errors."""
import json
from pathlib import Path

import pytest

from sim.errors import CollectionError
from sim.shards import PartWriter, done_indices, merge_rows, part_name, prepare_out_dir, run_workers


def _toy_shard(out: str, total: int, fail_at: int, worker: int, workers: int, progress) -> None:
    writer = PartWriter(Path(out), worker)
    done = done_indices(Path(out))
    for i in range(worker, total, workers):
        if i in done:
            continue
        if i == fail_at:
            raise ValueError(f"sample {i} is bad")
        writer.append({"index": i, "worker": worker})
        progress(1)
    writer.close()


def test_settings_guard(tmp_path):
    prepare_out_dir(tmp_path / "d", {"a": 1}, overwrite=False)
    prepare_out_dir(tmp_path / "d", {"a": 1}, overwrite=False)
    with pytest.raises(ValueError, match="other settings.*a: 1 -> 2"):
        prepare_out_dir(tmp_path / "d", {"a": 2}, overwrite=False)
    prepare_out_dir(tmp_path / "d", {"a": 2}, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        prepare_out_dir(tmp_path / "other", {"a": 1}, overwrite=False)


def test_torn_line_is_dropped_and_rows_merge(tmp_path):
    part = tmp_path / part_name(0)
    part.parent.mkdir()
    part.write_text(json.dumps({"index": 2}) + "\n" + json.dumps({"index": 0}) + "\n" + '{"index": 1, "ha')
    (tmp_path / part_name(1)).write_text(json.dumps({"index": 2, "dup": True}) + "\n")
    assert [r["index"] for r in merge_rows(tmp_path)] == [0, 2]
    writer = PartWriter(tmp_path, 0)
    writer.append({"index": 1})
    writer.close()
    assert done_indices(tmp_path) == {0, 1, 2}


def test_two_workers_then_resume_after_failure(tmp_path):
    out = tmp_path / "d"
    prepare_out_dir(out, {"toy": True}, overwrite=False)
    with pytest.raises(CollectionError, match="sample 5 is bad"):
        run_workers(_toy_shard, (str(out), 8, 5), workers=2, total=8, done=0, desc="toy")
    assert 5 not in done_indices(out)
    run_workers(_toy_shard, (str(out), 8, -1), workers=1, total=8, done=len(done_indices(out)), desc="toy")
    assert [r["index"] for r in merge_rows(out)] == list(range(8))
