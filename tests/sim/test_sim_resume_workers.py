"""A two-worker collection killed part-way keeps only complete samples and resumes, with any worker count, to the
same images a single uninterrupted process renders."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sim.collect_classification import collect_classification
from sim.config import ClassificationConfig
from vlkd_formats.image_codec import read_rgb
from sim.shards import done_indices
from vlkd_formats.dataset_dir import read_manifest

pytestmark = pytest.mark.sim
SETTINGS = {"labels": ["apple", "banana", "dice", "domino"], "per_class": 4, "image_size": 48}


def _cli(out, workers: int) -> list[str]:
    return [sys.executable, "-m", "vlkd_ros.cli", "collect", "classification", "--labels", ",".join(SETTINGS["labels"]),
            "--per-class", str(SETTINGS["per_class"]), "--image-size", str(SETTINGS["image_size"]),
            "--workers", str(workers), "--out", str(out)]


def test_killed_two_worker_run_resumes_to_identical_images(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(out, 2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while len(done_indices(out)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = done_indices(out)
    assert 0 < len(partial) < 16, proc.stderr.read().decode()[-2000:]
    assert not (out / "manifest.jsonl").exists()

    collect_classification(ClassificationConfig(**SETTINGS, workers=1).validate(), out)
    fresh = tmp_path / "fresh"
    collect_classification(ClassificationConfig(**SETTINGS).validate(), fresh)
    rows = list(read_manifest(out))
    assert [r["index"] for r in rows] == list(range(16))
    assert rows == list(read_manifest(fresh))
    for row in rows:
        assert np.array_equal(read_rgb(out / row["image"]), read_rgb(fresh / row["image"])), row["image"]
