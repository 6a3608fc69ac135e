"""vlkd_ros.ros.diagnostics: query statistics, the camera rate, and the /diagnostics status built from a report."""
import math

import pytest

pytest.importorskip("diagnostic_msgs.msg", reason="needs the ROS 2 message wheels (requirements-ros.txt)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from vlkd_ros.ros.diagnostics import (NodeReport, QueryStats, RateMeter, diagnostic_status,  # noqa: E402
                                      level_and_message, percentile, report_values)

ACTIVE = dict(name="ns/vlkd_perception", state="active", model_version="v1-abcdef12", backend="onnx-int8", objects=3,
              model_dir="/models/grasp", image_topic="/camera/image_raw", max_frame_age=1.0)


def test_query_stats_count_calls_and_keep_sorted_latencies() -> None:
    """begin/end move calls from in flight to total (and failed), latencies come back sorted."""
    stats = QueryStats(window=3)
    for _ in range(3):
        stats.begin()
    stats.end(0.3, ok=True)
    stats.end(0.1, ok=False)
    latencies, counts = stats.snapshot()
    assert latencies == [0.1, 0.3]
    assert counts == {"queries": 2, "failed": 1, "in_flight": 1}
    for seconds in (0.5, 0.2):
        stats.begin()
        stats.end(seconds, ok=True)
    assert stats.snapshot()[0] == [0.1, 0.2, 0.5]  # the window keeps the latest 3: 0.1, 0.5, 0.2


def test_rate_meter_measures_between_reads() -> None:
    """Increments per second since the previous read; zero when no time passed."""
    meter = RateMeter(now=100.0)
    assert meter.rate(30, now=101.0) == 30.0
    assert meter.rate(45, now=101.5) == 30.0
    assert meter.rate(50, now=101.5) == 0.0


def test_percentile_of_nothing_is_nan() -> None:
    """No latencies yet: nan, not an error."""
    assert math.isnan(percentile([], 50))
    assert percentile([0.1, 0.2, 0.3], 50) == pytest.approx(0.2)


@pytest.mark.parametrize("changes, level, message", [
    ({"error": "cannot load the model", "state": "inactive"}, DiagnosticStatus.ERROR,
     "node inactive: cannot load the model"),
    ({"state": "unconfigured"}, DiagnosticStatus.WARN, "node unconfigured"),
    ({}, DiagnosticStatus.WARN, "no frame yet on /camera/image_raw"),
    ({"frame_age_s": 2.25}, DiagnosticStatus.WARN, "camera frame 2.2 s old"),
    ({"frame_age_s": 2.25, "max_frame_age": 0.0}, DiagnosticStatus.OK, "ok"),
    ({"frame_age_s": 0.05}, DiagnosticStatus.OK, "ok"),
])
def test_level_and_message(changes: dict, level: bytes, message: str) -> None:
    """Error first, then not active, no frame, a stale frame (unless unlimited), else ok."""
    assert level_and_message(NodeReport(**{**ACTIVE, **changes})) == (level, message)


def test_values_and_status_of_a_busy_node() -> None:
    """Every figure lands under its key; numbers JSON-encoded, strings as they are."""
    report = NodeReport(**ACTIVE, frames_received=120, other_views=["hand_rgb", "base_depth"],
                        camera_info="640x480 camera_color_optical_frame", camera_rate_hz=29.987, frame_age_s=0.0334,
                        latencies=[0.010, 0.020, 0.030], counts={"queries": 3, "failed": 1, "in_flight": 0},
                        jobs_waiting=1, jobs_running=2,
                        embeddings={"computed": 4, "hits": 30, "fallbacks": 2, "failed": 0})
    values = report_values(report)
    assert values == {
        "state": "active", "model_version": "v1-abcdef12", "backend": "onnx-int8", "model_dir": "/models/grasp",
        "state_dir": "",
        "image_topic": "/camera/image_raw", "objects": 3, "frames_received": 120, "other_views": "base_depth, hand_rgb",
        "camera_info": "640x480 camera_color_optical_frame", "camera_rate_hz": 29.99, "frame_age_s": 0.033,
        "latency_p50_ms": 20.0, "latency_p95_ms": 29.0, "queries_total": 3, "queries_failed": 1,
        "queries_in_flight": 0, "jobs_waiting_for_frames": 1, "jobs_running": 2, "embeddings_computed": 4,
        "embedding_cache_hits": 30, "embedding_fallbacks": 2}
    status = diagnostic_status(report)
    assert status.name == "ns/vlkd_perception: grasp feasibility" and status.hardware_id == "v1-abcdef12"
    assert (status.level, status.message) == (DiagnosticStatus.OK, "ok")
    published = {kv.key: kv.value for kv in status.values}
    assert list(published) == list(values)
    assert published["state"] == "active" and published["camera_rate_hz"] == "29.99"
    assert published["latency_p95_ms"] == "29.0" and published["objects"] == "3"


def test_status_without_model_or_frame() -> None:
    """No model: hardware_id 'no model', empty version; no frame: age and latencies NaN, no other views."""
    status = diagnostic_status(NodeReport(name="vlkd_perception", state="unconfigured"))
    published = {kv.key: kv.value for kv in status.values}
    assert status.hardware_id == "no model" and published["model_version"] == ""
    assert published["frame_age_s"] == "NaN" and published["latency_p50_ms"] == "NaN"
    assert published["other_views"] == "none" and published["camera_info"] == "none"
    assert (status.level, status.message) == (DiagnosticStatus.WARN, "node unconfigured")
