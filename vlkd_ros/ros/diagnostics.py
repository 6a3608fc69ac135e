"""The node's /diagnostics status: query counts and latencies, camera rate, and the status built from them."""
from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

LATENCY_WINDOW = 500


class QueryStats:
    """Counts of ~/is_graspable calls (total, failed, in flight) and the latencies of the latest ones."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._latencies: deque = deque(maxlen=window)
        self._counts = {"queries": 0, "failed": 0, "in_flight": 0}
        self._lock = threading.Lock()

    def begin(self) -> None:
        """A call started."""
        with self._lock:
            self._counts["in_flight"] += 1

    def end(self, seconds: float, ok: bool) -> None:
        """A call started with `begin` was answered after `seconds`, successfully or not."""
        with self._lock:
            self._counts["in_flight"] -= 1
            self._counts["queries"] += 1
            self._counts["failed"] += 0 if ok else 1
            self._latencies.append(seconds)

    def snapshot(self) -> tuple[list[float], dict[str, int]]:
        """(sorted latencies in seconds, {"queries", "failed", "in_flight"})."""
        with self._lock:
            return sorted(self._latencies), dict(self._counts)


class RateMeter:
    """Rate of a growing counter between successive reads."""

    def __init__(self, now: float | None = None) -> None:
        self._mark = (time.monotonic() if now is None else now, 0)

    def rate(self, count: int, now: float | None = None) -> float:
        """Increments per second of `count` since the previous call (or since creation)."""
        now = time.monotonic() if now is None else now
        then, before = self._mark
        self._mark = (now, count)
        return (count - before) / (now - then) if now > then else 0.0


@dataclass
class NodeReport:
    """What /diagnostics says about the node at one moment (model_version None: no model loaded)."""

    name: str
    state: str
    error: str = ""
    model_version: str | None = None
    backend: str = ""  # the image encoder's backend, once a model is loaded
    objects: int = 0
    model_dir: str = ""  # resolved once configured
    state_dir: str = ""  # where few-shot learning writes (the model dir itself when it has no state dir)
    image_topic: str = ""
    frames_received: int = 0
    other_views: Sequence[str] = ()
    camera_info: str = "none"
    camera_rate_hz: float = 0.0
    frame_age_s: float | None = None  # None: no frame yet
    max_frame_age: float = 0.0
    latencies: Sequence[float] = ()  # sorted, seconds
    counts: dict[str, int] = field(default_factory=lambda: {"queries": 0, "failed": 0, "in_flight": 0})
    jobs_waiting: int = 0
    jobs_running: int = 0
    # EmbeddingCache.stats(): embeddings computed, queries answered from a cached one (hits) or from the previous
    # observation's while the latest was being embedded (fallbacks), computations that failed
    embeddings: dict[str, int] = field(default_factory=lambda: {"computed": 0, "hits": 0, "fallbacks": 0,
                                                                "failed": 0})


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    return float(np.percentile(sorted_values, q))


def level_and_message(report: NodeReport) -> tuple[bytes, str]:
    """The status level and its one-line message: error, not active, no or stale frame, else ok."""
    age, limit = report.frame_age_s, report.max_frame_age
    if report.error:
        return DiagnosticStatus.ERROR, f"node {report.state}: {report.error}"
    if report.state != "active":
        return DiagnosticStatus.WARN, f"node {report.state}"
    if age is None:
        return DiagnosticStatus.WARN, f"no frame yet on {report.image_topic}"
    if limit > 0 and age > limit:
        return DiagnosticStatus.WARN, f"camera frame {age:.1f} s old"
    return DiagnosticStatus.OK, "ok"


def report_values(report: NodeReport) -> dict[str, Any]:
    """The status's key/values, in the order they are published."""
    lat, counts = report.latencies, report.counts
    age = math.nan if report.frame_age_s is None else report.frame_age_s
    return {
        "state": report.state,
        "model_version": report.model_version or "",
        "backend": report.backend,
        "model_dir": report.model_dir,
        "state_dir": report.state_dir,
        "image_topic": report.image_topic,
        "objects": report.objects,
        "frames_received": report.frames_received,
        "other_views": ", ".join(sorted(report.other_views)) or "none",
        "camera_info": report.camera_info,
        "camera_rate_hz": round(report.camera_rate_hz, 2),
        "frame_age_s": round(age, 3),
        "latency_p50_ms": round(1000 * percentile(lat, 50), 2),
        "latency_p95_ms": round(1000 * percentile(lat, 95), 2),
        "queries_total": counts["queries"],
        "queries_failed": counts["failed"],
        "queries_in_flight": counts["in_flight"],
        "jobs_waiting_for_frames": report.jobs_waiting,
        "jobs_running": report.jobs_running,
        "embeddings_computed": report.embeddings.get("computed", 0),
        "embedding_cache_hits": report.embeddings.get("hits", 0),
        "embedding_fallbacks": report.embeddings.get("fallbacks", 0),
    }


def diagnostic_status(report: NodeReport) -> DiagnosticStatus:
    """The DiagnosticStatus "<node>: grasp feasibility", its hardware_id the model version; values as strings."""
    status = DiagnosticStatus(name=f"{report.name}: grasp feasibility",
                              hardware_id=report.model_version if report.model_version is not None else "no model")
    status.level, status.message = level_and_message(report)
    status.values = [KeyValue(key=k, value=json.dumps(v) if not isinstance(v, str) else v)
                     for k, v in report_values(report).items()]
    return status
