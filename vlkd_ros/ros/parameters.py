"""The vlkd_perception parameter table (defaults, descriptions, ranges, when each applies) and its checks, with
the model views the node serves and the parameter naming each one's camera topic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import ReliabilityPolicy

PREFETCH_WHILE_QUERIED_S = 1.0  # prefetch_rate embeds new frames only this long after the latest latest-frame query
RELIABILITIES = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
# Model view -> the parameter naming its topic. A model stacks some of these views (GraspModel.views).
VIEW_TOPICS = {"base_rgb": "image_topic", "base_depth": "depth_topic", "hand_rgb": "hand_image_topic",
               "hand_depth": "hand_depth_topic"}
_WHEN_NOTES = {"runtime": "changeable at run time",
               "configure": "read in on_configure: change it while unconfigured (deactivate, cleanup, set, "
                            "configure, activate)",
               "startup": "read once at start"}


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, when a change takes effect, and its valid values."""

    name: str
    default: Any
    description: str
    when: str  # "runtime": applies at once; "configure": read in on_configure; "startup": read once by main()
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor rqt/`ros2 param describe` show, with ranges rclpy enforces."""
        desc = ParameterDescriptor(name=self.name, description=f"{self.description} ({_WHEN_NOTES[self.when]})",
                                   read_only=self.when == "startup")
        if self.choices:
            desc.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.float_range:
            desc.floating_point_range = [FloatingPointRange(from_value=float(self.float_range[0]),
                                                            to_value=float(self.float_range[1]), step=0.0)]
        if self.int_range:
            desc.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=0)]
        return desc


PARAMETERS = (
    ParamSpec("model_dir", "", "grasp-feasibility model dir (model.json + safetensors) loaded on activate; empty: "
              "the shipped default model (vlkd_ros/models/grasp_default)", "configure"),
    ParamSpec("state_dir", "", "writable dir for what ~/add_object learns (registry, weights, shots, ONNX, writer "
              "lock), read over model_dir, which is then never written; empty: a per-user dir under "
              "$XDG_STATE_HOME/vlkd_ros for the shipped model or a read-only model_dir, else model_dir itself",
              "configure"),
    ParamSpec("device", "cpu", "torch device for the model, e.g. cpu or cuda:0", "configure"),
    ParamSpec("backend", "auto", "image encoder backend of GraspFeasibility.from_checkpoint: onnx (onnxruntime "
              "running the export train-grasp and vlkd export write), onnx-int8 (its int8 copy, 3x faster on CPUs "
              "with int8 dot products), auto (onnx-int8 where the export wrote it, else onnx) or torch",
              "configure", choices=("auto", "onnx-int8", "onnx", "torch")),
    ParamSpec("inference_threads", 1, "intra-op threads of the image encoder (onnxruntime session threads; torch's "
              "thread count for backend torch); 0: the backend's default, one per core", "configure",
              int_range=(0, 256)),
    ParamSpec("image_topic", "/camera/image_raw", "colour camera topic (sensor_msgs/Image)", "configure"),
    ParamSpec("depth_topic", "", "depth topic of the same camera (16UC1 mm or 32FC1 m), for models that stack "
              "base_depth; empty: none", "configure"),
    ParamSpec("hand_image_topic", "", "wrist camera colour topic, for models that stack hand_rgb; empty: none",
              "configure"),
    ParamSpec("hand_depth_topic", "", "wrist camera depth topic, for models that stack hand_depth; empty: none",
              "configure"),
    ParamSpec("camera_info_topic", "", "camera info topic (sensor_msgs/CameraInfo); empty: none", "configure"),
    ParamSpec("image_reliability", "best_effort", "QoS reliability of the camera subscriptions", "configure",
              choices=tuple(RELIABILITIES)),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", "startup",
              float_range=(0.1, 60.0)),
    ParamSpec("threshold", -1.0, "decision threshold: graspable = score >= threshold; -1: the model's own "
              "(calibrated) decision", "runtime", float_range=(-1.0, 1.0)),
    ParamSpec("max_frame_age", 1.0, "seconds after which the latest camera frame is too old to judge; 0: no limit",
              "runtime", float_range=(0.0, 3600.0)),
    ParamSpec("image_size", 0, "frames whose shorter side is larger are area-resized to this before the model; "
              "0: the model's input size", "runtime", int_range=(0, 8192)),
    ParamSpec("max_image_pixels", 3840 * 2160 * 2, "frames with more pixels are refused; 0: no limit", "runtime",
              int_range=(0, 2**31 - 1)),
    ParamSpec("known_objects_only", False, "refuse names that are not in the model's object registry (false: "
              "answer any name zero-shot, the model is open-vocabulary)", "runtime"),
    ParamSpec("prefetch_rate", 30.0, "Hz at most at which each new camera observation is embedded as it arrives, "
              f"while latest-frame queries came in the last {PREFETCH_WHILE_QUERIED_S:g} s; queries then answer from "
              "the newest embedded fresh observation and never wait for the model; 0: a query that finds the latest "
              "observation not yet embedded embeds it", "runtime", float_range=(0.0, 1000.0)),
    ParamSpec("prefetch_busy_share", 0.4, "largest share of one core the prefetch may spend embedding: after an "
              "embedding that took t s of CPU, the next starts t / share s after it began (so a slow CPU embeds "
              "fewer frames and keeps the rest for queries, the camera and other nodes); 1: only prefetch_rate "
              "limits it", "runtime", float_range=(0.01, 1.0)),
    ParamSpec("results_rate", 1.0, "Hz at which the latest frame is judged for every known object and published "
              "on ~/results; 0: publish only the answers of ~/is_graspable", "runtime", float_range=(0.0, 30.0)),
    ParamSpec("publish_debug_image", False, "publish the judged frame with scores drawn on ~/debug_image",
              "runtime"),
    ParamSpec("max_fewshot_images", 50, "most images (or next frames) one ~/add_object goal may use", "runtime",
              int_range=(1, 1000)),
    ParamSpec("fewshot_frame_timeout", 10.0, "seconds ~/add_object waits for its next distinct camera frames",
              "runtime", float_range=(0.1, 600.0)),
    ParamSpec("fewshot_min_shots", 3, "fewest distinct views (images or next frames) an ~/add_object job learns "
              "from; each is held out in turn to judge the query fitted on the others", "runtime",
              int_range=(2, 1000)),
    ParamSpec("fewshot_min_heldout_auc", 0.75, "an ~/add_object job succeeds only when each shot, scored by the "
              "query fitted on the other shots, outranks the model dir's held-out training frames without the "
              "object with at least this ROC AUC on average; 0: accept every fit", "runtime",
              float_range=(0.0, 1.0)),
    ParamSpec("max_fewshot_jobs", 4, "most ~/add_object jobs collecting frames, queued or running at once (one per "
              "object name); more are refused until one finishes or is cancelled", "runtime", int_range=(1, 100)),
    ParamSpec("autostart", True, "configure and activate at start (false: wait for a lifecycle manager)",
              "startup"),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


def check_choices(values: Mapping[str, Any]) -> None:
    """Raise ValueError when a parameter with fixed choices has another value."""
    for name, value in values.items():
        spec = SPECS.get(name)
        if spec and spec.choices and value not in spec.choices:
            raise ValueError(f"parameter {name}={value!r} is not valid; valid: {', '.join(spec.choices)}")


def accepted_changes(values: Mapping[str, Any], state: str) -> dict[str, Any]:
    """The node's own parameters among `values` if all may change in lifecycle `state`; else ValueError why."""
    changes = {}
    for name, value in values.items():
        spec = SPECS.get(name)
        if spec is None:
            continue
        if spec.when == "configure" and state != "unconfigured":
            raise ValueError(f"{name} is read in on_configure and the node is {state}: deactivate and clean it up, "
                             f"set {name}, then configure and activate")
        changes[name] = value
    check_choices(changes)
    return changes


def configure_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The configure-time parameters among the node's current values."""
    return {spec.name: values[spec.name] for spec in PARAMETERS if spec.when == "configure"}


def served_views(views: Sequence[str]) -> list[str]:
    """The model's views if the node can serve them (known, base_rgb first), else ValueError."""
    views = list(views)
    unknown = [v for v in views if v not in VIEW_TOPICS]
    if unknown or not views or views[0] != "base_rgb":
        raise ValueError(f"model views {views} are not supported; the node serves {list(VIEW_TOPICS)} with base_rgb "
                         "first")
    return views
