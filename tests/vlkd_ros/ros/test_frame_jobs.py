"""vlkd_ros.ros.frame_jobs: ~/add_object goals' jobs that collect the next distinct camera frames, become complete,
expire (saying the scene did not change), or are cancelled."""
import time

import numpy as np

from vlkd_ros.inference.jobs import FewShotJob
from vlkd_ros.ros.frame_jobs import FrameJobs


def view(i: int, size: int = 48) -> np.ndarray:
    """A distinct camera view per i: a bright square on a grey table, moved by 6 pixels per step."""
    rgb = np.full((size, size, 3), 110, np.uint8)
    x = (6 * i) % (size - 12)
    rgb[10:22, x:x + 12] = (220, 40, 40)
    return rgb


def test_frames_are_collected_until_the_job_is_complete() -> None:
    """Each new distinct frame (with the other views' latest messages) goes to the job until it has all it needs."""
    jobs = FrameJobs()
    assert not jobs and jobs.waiting() == 0
    job = jobs.queue("test gadget", "a gadget", take=2, timeout=10.0)
    assert jobs and job.job_id.startswith("frames-") and jobs.all() == [job]
    assert job.collecting and not job.complete and jobs.waiting() == 1 and job.deadline > time.monotonic() + 9

    extra = {"base_depth": "depth 1"}
    assert not jobs.offer("frame 1", extra, view(1))
    extra["base_depth"] = "depth 2"  # the job keeps what was latest when its frame came
    assert jobs.offer("frame 2", extra, view(2)), "the second frame completes the job"
    assert not jobs.offer("frame 3", extra, view(3)), "a complete job takes no more frames"
    assert job.frames == ["frame 1", "frame 2"]
    assert job.extra == [{"base_depth": "depth 1"}, {"base_depth": "depth 2"}]
    assert job.complete and jobs.all() == [job]


def test_a_static_camera_gives_one_frame_and_the_job_says_to_move_something() -> None:
    """Near-duplicates of a kept frame (sensor noise on a static scene) and frames that show nothing (flat, noise,
    unreadable) are skipped and counted; at the deadline the job fails saying why and what to do."""
    jobs = FrameJobs()
    job = jobs.queue("mug", "", take=3, timeout=0.5)
    rng = np.random.default_rng(0)
    for _ in range(30):
        noisy = np.clip(view(1).astype(float) + rng.normal(0, 1.0, (48, 48, 3)), 0, 255).astype(np.uint8)
        assert not jobs.offer("frame", {}, noisy)
    jobs.offer("grey", {}, np.full((48, 48, 3), 128, np.uint8))
    jobs.offer("noise", {}, rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    jobs.offer("broken", {}, None, "could not be read: unsupported colour encoding 'yuv422'")
    assert len(job.frames) == 1 and job.duplicates == 29 and job.refused == 3
    assert job.progress_note() == "collecting camera frames: 1/3 distinct (29 near-duplicates, 3 unusable skipped)"
    assert jobs.expire("/camera/image_raw", now=job.deadline + 0.1) == [job]
    assert job.state == "failed" and job.frames == [] and job.thumbs == []
    assert job.message.startswith("only 1 of 3 distinct frames arrived on /camera/image_raw within "
                                  "fewshot_frame_timeout (0.5 s); 29 near-duplicates of earlier ones were skipped: "
                                  "the scene does not change, move the object or the camera")
    assert job.message.endswith("3 frames were unusable (the last could not be read: unsupported colour encoding "
                                "'yuv422')")
    moved = jobs.queue("mug", "", take=3, timeout=10.0)
    for i in range(3):  # the object moves between frames: every one counts
        jobs.offer("frame", {}, view(i))
    assert moved.complete and moved.duplicates == 0


def test_jobs_with_a_model_job_take_no_frames_and_are_not_complete() -> None:
    """Once the node started the model's job, the frame job is done collecting."""
    jobs = FrameJobs()
    job = jobs.queue("mug", "", take=1, timeout=10.0)
    other = jobs.queue("cup", "", take=3, timeout=10.0)
    assert jobs.offer("frame", {}, view(0))
    job.model_job, job.frames, job.extra = FewShotJob("abc", "mug"), [], []
    assert not job.complete and not other.complete and jobs.waiting() == 1
    jobs.offer("frame", {}, view(1))
    assert job.frames == [] and len(other.frames) == 2


def test_late_jobs_expire_with_what_arrived() -> None:
    """Past its deadline a job still missing frames fails, saying how many came on which topic; once only."""
    jobs = FrameJobs()
    late = jobs.queue("mug", "", take=3, timeout=0.5)
    full = jobs.queue("cup", "", take=1, timeout=0.5)
    jobs.offer("frame", {}, view(0))
    assert jobs.expire("/camera/image_raw", now=late.deadline - 0.1) == []
    assert jobs.expire("/camera/image_raw", now=late.deadline + 0.1) == [late]
    assert late.state == "failed" and late.frames == [] and late.extra == []
    assert late.message == ("only 1 of 3 distinct frames arrived on /camera/image_raw within fewshot_frame_timeout "
                            "(0.5 s)")
    assert full.state == "queued" and full.complete, "a complete job does not expire"
    assert jobs.expire("/camera/image_raw", now=late.deadline + 1.0) == []


def test_deactivation_fails_the_collecting_jobs_and_cancel_stops_one() -> None:
    """fail_collecting fails only jobs still waiting for frames, with the given reason; cancel stops a collecting
    job and leaves a started one to the model."""
    jobs = FrameJobs()
    waiting = jobs.queue("mug", "", take=2, timeout=10.0)
    started = jobs.queue("cup", "", take=1, timeout=10.0)
    started.model_job = FewShotJob("abc", "cup")
    jobs.fail_collecting("the node was deactivated before the frames arrived")
    assert (waiting.state, waiting.message) == ("failed", "the node was deactivated before the frames arrived")
    assert started.state == "queued" and jobs.waiting() == 0
    assert jobs.cancel("frames-unknown") is None
    assert jobs.cancel(started.job_id) is started and started.state == "queued"

    collecting = jobs.queue("bowl", "", take=2, timeout=10.0)
    jobs.offer("frame", {}, view(0))
    assert jobs.cancel(collecting.job_id) is collecting
    assert (collecting.state, collecting.frames) == ("cancelled", [])
    assert collecting.message == "cancelled while collecting frames; nothing changed"


def test_jobs_done_collecting_are_forgotten() -> None:
    """However many goals came, only the collecting frame jobs are kept past the next `queue` (a goal holds its own
    job to its end)."""
    jobs = FrameJobs()
    active = jobs.queue("keep", "", take=5, timeout=100.0)
    for i in range(120):
        jobs.cancel(jobs.queue(f"object {i}", "", take=1, timeout=10.0).job_id)
    assert len(jobs.all()) == 2 and jobs.all()[0] is active
    last = jobs.queue("last", "", take=1, timeout=10.0)
    assert jobs.all() == [active, last]
