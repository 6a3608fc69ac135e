"""vlkd_ros.ros.frame_jobs: ~/add_object jobs that collect the next camera frames, become ready, or expire."""
import time

from vlkd_ros.ros.frame_jobs import FrameJobs


def test_frames_are_collected_until_the_job_is_ready() -> None:
    """Each new frame (with the other views' latest messages) goes to the job until it has all it needs."""
    jobs = FrameJobs()
    assert not jobs and jobs.ready() == [] and jobs.waiting() == 0
    job = jobs.queue("test gadget", "a gadget", take=2, timeout=10.0)
    assert jobs and job.job_id.startswith("frames-") and jobs.get(job.job_id) is job
    assert job.collecting and jobs.waiting() == 1 and job.deadline > time.monotonic() + 9

    extra = {"base_depth": "depth 1"}
    assert not jobs.offer("frame 1", extra)
    extra["base_depth"] = "depth 2"  # the job keeps what was latest when its frame came
    assert jobs.offer("frame 2", extra), "the second frame completes the job"
    assert not jobs.offer("frame 3", extra), "a complete job takes no more frames"
    assert job.frames == ["frame 1", "frame 2"]
    assert job.extra == [{"base_depth": "depth 1"}, {"base_depth": "depth 2"}]
    assert jobs.ready() == [job]


def test_jobs_with_a_model_job_take_no_frames_and_are_not_ready() -> None:
    """Once the node started the model's job, the frame job is done collecting."""
    jobs = FrameJobs()
    job = jobs.queue("mug", "", take=1, timeout=10.0)
    other = jobs.queue("cup", "", take=3, timeout=10.0)
    assert jobs.offer("frame", {})
    job.model_job, job.frames, job.extra = object(), [], []
    assert jobs.ready() == [] and jobs.waiting() == 1
    jobs.offer("frame", {})
    assert job.frames == [] and len(other.frames) == 2


def test_late_jobs_expire_with_what_arrived() -> None:
    """Past its deadline a job still missing frames fails, saying how many came on which topic; once only."""
    jobs = FrameJobs()
    late = jobs.queue("mug", "", take=3, timeout=0.5)
    full = jobs.queue("cup", "", take=1, timeout=0.5)
    jobs.offer("frame", {})
    assert jobs.expire("/camera/image_raw", now=late.deadline - 0.1) == []
    assert jobs.expire("/camera/image_raw", now=late.deadline + 0.1) == [late]
    assert late.state == "failed" and late.frames == [] and late.extra == []
    assert late.message == "only 1 of 3 frames arrived on /camera/image_raw within fewshot_frame_timeout"
    assert full.state == "queued" and jobs.ready() == [full], "a complete job does not expire"
    assert jobs.expire("/camera/image_raw", now=late.deadline + 1.0) == []


def test_deactivation_fails_the_collecting_jobs() -> None:
    """fail_collecting fails only jobs still waiting for frames, with the given reason."""
    jobs = FrameJobs()
    waiting = jobs.queue("mug", "", take=2, timeout=10.0)
    started = jobs.queue("cup", "", take=1, timeout=10.0)
    started.model_job = object()
    jobs.fail_collecting("the node was deactivated before the frames arrived")
    assert (waiting.state, waiting.message) == ("failed", "the node was deactivated before the frames arrived")
    assert started.state == "queued" and jobs.waiting() == 0
    assert jobs.get("frames-unknown") is None
