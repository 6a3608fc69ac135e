"""Sharded, resumable collection runs.

Sample i of a plan belongs to worker i % N. A worker writes a sample's files atomically, then appends its row to
its own part manifest `.parts/part-<worker>.jsonl` (fsynced, a torn last line is dropped on reopen), so a killed
run leaves only complete samples. A rerun with the same settings skips every index found in any part (whatever N
was) and `merge_rows` then gives the rows for `manifest.jsonl`. `.parts/settings.json` guards against resuming
with different settings.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import queue
import shutil
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from sim.errors import CollectionError, SimError
from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.dataset_dir import INFO_FILE, MANIFEST_FILE, SPLITS, ManifestWriter, read_manifest
from vlkd_formats.dir_lock import LOCK_FILE, DirLock

PARTS_DIR = ".parts"
SETTINGS_FILE = f"{PARTS_DIR}/settings.json"
ARTEFACTS = (*SPLITS, "episodes", PARTS_DIR, INFO_FILE, MANIFEST_FILE, "CARD.md", "montage.png", "scenes.json")
Progress = Callable[[int], None]
T = TypeVar("T")


def prepare_out_dir(out: Path, settings: dict[str, Any], overwrite: bool) -> DirLock:
    """Create `out` for a new collection, or accept it for resuming when it was started with the same settings.

    Returns the dir's lock, held: keep it (`with prepare_out_dir(...):`) while the collection writes, so a second
    collector started on the same dir is refused (DirLockedError naming this one's pid) instead of interleaving
    its samples with ours. It is taken before `overwrite` deletes anything."""
    lock = DirLock(out, "dataset collection")
    lock.acquire()
    try:
        _check_out_dir(out, settings, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_out_dir(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    if overwrite:
        for name in ARTEFACTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    stored = out / SETTINGS_FILE
    if stored.is_file():
        old = json.loads(stored.read_text())
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed[:5])
            raise ValueError(f"{out} holds a collection made with other settings ({details}); use another --out, "
                             "the same settings to resume, or --overwrite to start again")
        return
    if any(p.name != LOCK_FILE for p in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no resumable collection; use another --out or --overwrite")
    atomic_write_json(stored, settings)


def part_name(worker: int) -> str:
    """Manifest file name (relative to the dataset dir) of one worker's finished rows."""
    return f"{PARTS_DIR}/part-{worker:03d}.jsonl"


def merge_rows(out: Path) -> list[dict[str, Any]]:
    """All finished rows of every part, one per sample index, in index order."""
    rows: dict[int, dict[str, Any]] = {}
    for part in sorted((out / PARTS_DIR).glob("part-*.jsonl")):
        for row in read_manifest(out, f"{PARTS_DIR}/{part.name}"):
            rows.setdefault(int(row["index"]), row)
    return [rows[i] for i in sorted(rows)]


def done_indices(out: Path) -> set[int]:
    """Indices of the samples already finished in `out`."""
    return {int(r["index"]) for r in merge_rows(out)}


def pending(plan: Sequence[T], out: Path, worker: int, workers: int, rows_per_item: int = 1) -> list[T]:
    """This worker's share of `plan` (items with index % workers == worker) that `out` does not hold yet: an item
    is done when all its `rows_per_item` rows (indices index * rows_per_item + 0, 1, ...) are."""
    done = done_indices(out)
    return [item for item in plan if item.index % workers == worker
            and not all(item.index * rows_per_item + k in done for k in range(rows_per_item))]


def env_batches(todo: list[T], num_envs: int) -> Iterator[tuple[list[T], list[T]]]:
    """(batch, the batch padded to `num_envs` by repeating its last item) for vectorised env resets."""
    for start in range(0, len(todo), num_envs):
        batch = todo[start:start + num_envs]
        yield batch, batch + [batch[-1]] * (num_envs - len(batch))


class PartWriter:
    """A worker's part manifest; `append` turns a full disk into a CollectionError that says how to resume."""

    def __init__(self, out: Path, worker: int):
        self._writer = ManifestWriter(out, part_name(worker))

    def append(self, row: dict[str, Any]) -> None:
        """Record one finished sample (call after its files are written)."""
        try:
            self._writer.append(row)
        except OSError as err:
            raise CollectionError(f"cannot append to {self._writer.path}: {err}. Finished samples are kept; fix "
                                  "the disk and rerun the same command to resume") from err

    def close(self) -> None:
        """Close the part manifest."""
        self._writer.close()


def run_workers(shard: Callable[..., None], args: tuple, workers: int, total: int, done: int, desc: str,
                unit: str = "frame", per_sample: int = 1) -> None:
    """Run `shard(*args, worker, workers, progress)` on `workers` processes (in-process for one) under one tqdm
    bar counting `unit`s (`per_sample` of them per finished sample); a failed worker raises CollectionError."""
    with tqdm(total=total * per_sample, initial=done * per_sample, unit=unit, desc=desc, dynamic_ncols=True) as bar:
        if workers == 1:
            shard(*args, 0, 1, lambda n: bar.update(n * per_sample))
            return
        ctx = mp.get_context("spawn")
        messages = ctx.Queue()
        procs = [ctx.Process(target=_worker_main, args=(shard, args, w, workers, messages), daemon=True)
                 for w in range(workers)]
        for proc in procs:
            proc.start()
        errors: list[str] = []
        try:
            while any(p.is_alive() for p in procs) or not messages.empty():
                try:
                    kind, payload = messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "progress":
                    bar.update(payload * per_sample)
                else:
                    errors.append(payload)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
                proc.join()
    failed = [f"worker {w} exited with status {p.exitcode}" for w, p in enumerate(procs) if p.exitcode != 0]
    if errors or failed:
        raise CollectionError("; ".join(errors or failed) + ". Finished samples are kept: rerun the same command to "
                              "resume")


def _worker_main(shard: Callable[..., None], args: tuple, worker: int, workers: int, messages: Any) -> None:
    try:
        shard(*args, worker, workers, lambda n: messages.put(("progress", n)))
    except Exception as err:  # reported to the parent, which raises it as one error
        detail = str(err) if isinstance(err, (ValueError, FileNotFoundError, SimError)) else \
            traceback.format_exc(limit=3)
        messages.put(("error", f"worker {worker}: {type(err).__name__}: {detail}"))
        raise SystemExit(1) from err
