"""ROS 2 node `vlkd_sim_camera`: streams camera frames to a topic from the ManiSkill clutter env or a folder of images.

A background thread renders (or reads) frames; a timer publishes the newest one at the requested rate with a
fresh stamp, so slow rendering or a scene reset never stalls the stream. `env` source: each scene is rendered
once (the table is static) and a new scene is drawn every `scene_period` seconds.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from vlkd_ros.ros_image import numpy_to_image

CLUTTER_ENV_ID = "VlkdPickClutter-v1"
SOURCES = ("env", "images")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
RELIABILITIES = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


@dataclass
class SimCameraConfig:
    """What to publish, where and how fast."""

    source: str = "env"
    env_id: str = CLUTTER_ENV_ID
    images: str = ""
    topic: str = "/camera/image_raw"
    depth_topic: str = ""
    camera_info_topic: str = ""
    frame_id: str = "camera_color_optical_frame"
    rate: float = 30.0
    image_size: int = 224
    camera: str = ""
    seed: int = 0
    scene_period: float = 0.0
    sim_backend: str = "cpu"
    reliability: str = "best_effort"
    frames: int = 0

    def validate(self) -> "SimCameraConfig":
        """Raise ValueError naming the first bad value and what would be valid; return self."""
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not valid; valid: {', '.join(SOURCES)}")
        if self.source == "images" and not Path(self.images).is_dir():
            raise ValueError(f"--images {self.images!r} is not a folder of {'/'.join(IMAGE_SUFFIXES)} files")
        if not 0 < self.rate <= 1000:
            raise ValueError(f"rate {self.rate} Hz must be in (0, 1000]")
        if not 16 <= self.image_size <= 4096:
            raise ValueError(f"image_size {self.image_size} px must be in 16..4096")
        if self.scene_period < 0 or self.frames < 0:
            raise ValueError(f"scene_period ({self.scene_period}) and frames ({self.frames}) must be >= 0")
        if self.reliability not in RELIABILITIES:
            raise ValueError(f"reliability {self.reliability!r} is not valid; valid: {', '.join(RELIABILITIES)}")
        if not self.topic:
            raise ValueError("topic is empty: give the colour image topic")
        return self


@dataclass
class Shot:
    """One rendered view: RGB uint8 HxWx3, optional depth uint16 mm HxW, optional 3x3 intrinsics."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    label: str = ""


def image_folder_shots(folder: str | Path, size: int) -> Iterator[Shot]:
    """Cycle forever over the images in `folder` (sorted, recursive), resized to size x size RGB."""
    from PIL import Image as PILImage

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {folder}")
    shots = [Shot(np.asarray(PILImage.open(p).convert("RGB").resize((size, size))), label=p.parent.name)
             for p in files]
    while True:
        yield from shots


def clutter_env_shots(config: SimCameraConfig) -> Iterator[Shot]:
    """Render a new clutter scene per call to next(): RGB, depth and intrinsics of one env camera."""
    import gymnasium as gym

    import sim.envs  # noqa: F401 - registers the project's ManiSkill envs
    from sim.backend import explain_render_failure, maniskill_backend_kwargs

    if config.env_id not in gym.registry:
        raise ValueError(f"env {config.env_id!r} is not registered; registered vlkd envs: "
                         f"{', '.join(k for k in gym.registry if k.startswith('Vlkd')) or 'none'}")
    try:
        env = gym.make(config.env_id, obs_mode="rgbd", num_envs=1,
                       sensor_configs=dict(width=config.image_size, height=config.image_size),
                       **maniskill_backend_kwargs(config.sim_backend))
    except Exception as err:  # noqa: BLE001 - turn SAPIEN's "no rendering device" into what to install
        better = explain_render_failure(err)
        raise (better or err) from err
    try:
        seed = config.seed
        while True:
            obs, _ = env.reset(seed=seed)
            seed += 1
            cameras = obs["sensor_data"]
            name = config.camera or next(iter(cameras))
            if name not in cameras:
                raise ValueError(f"camera {name!r} not in env {config.env_id}; cameras: {', '.join(cameras)}")
            data, param = cameras[name], obs.get("sensor_param", {}).get(name, {})
            rgb = _numpy(data["rgb"])[0, ..., :3].astype(np.uint8)
            depth = _numpy(data["depth"])[0, ..., 0].clip(0, 65535).astype(np.uint16) if "depth" in data else None
            k = _numpy(param["intrinsic_cv"])[0] if "intrinsic_cv" in param else None
            yield Shot(rgb, depth, k, label=f"seed {seed - 1}")
    finally:
        env.close()


def _numpy(value: Any) -> np.ndarray:
    """A torch tensor or array as a numpy array."""
    return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)


class SimCameraNode(Node):
    """Publishes the newest Shot at a fixed rate on an Image topic (plus depth and CameraInfo when asked)."""

    def __init__(self, config: SimCameraConfig, shots: Iterator[Shot] | None = None) -> None:
        """Start the producer thread and the publish timer."""
        super().__init__("vlkd_sim_camera")
        self.config = config.validate()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=RELIABILITIES[config.reliability])
        self._image_pub = self.create_publisher(Image, config.topic, qos)
        self._depth_pub = self.create_publisher(Image, config.depth_topic, qos) if config.depth_topic else None
        self._info_pub = (self.create_publisher(CameraInfo, config.camera_info_topic, qos)
                          if config.camera_info_topic else None)
        self._shots = shots if shots is not None else (
            image_folder_shots(config.images, config.image_size) if config.source == "images"
            else clutter_env_shots(config))
        self._latest: Shot | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._next_scene = threading.Event()
        self.published = 0
        self._started = time.monotonic()
        self._producer = threading.Thread(target=self._produce, name="sim_camera_producer", daemon=True)
        self._producer.start()
        self._timer = self.create_timer(1.0 / config.rate, self._publish)
        if config.scene_period > 0:
            self.create_timer(config.scene_period, self._next_scene.set)
        self.get_logger().info(f"publishing {config.source} frames on {config.topic} at {config.rate} Hz")

    def _produce(self) -> None:
        """Producer thread: take a shot, then wait for the next scene (images: one per publish)."""
        try:
            while not self._stop.is_set():
                self._latest = next(self._shots)
                if self.config.source == "env":
                    if self._latest is not None and self.published == 0:
                        self.get_logger().info(f"first scene rendered ({self._latest.label})")
                    self._next_scene.wait()
                    self._next_scene.clear()
                else:
                    self._next_scene.wait(1.0 / self.config.rate)
                    self._next_scene.clear()
        except BaseException as err:  # noqa: BLE001 - reported by the publish timer in the node's thread
            self._error = err

    def _publish(self) -> None:
        """Timer: publish the newest shot with the current time as its stamp."""
        if self._error is not None:
            raise self._error
        shot = self._latest
        if shot is None:
            return
        if self.config.source == "images":
            self._next_scene.set()
        stamp = self.get_clock().now().to_msg()
        self._image_pub.publish(numpy_to_image(shot.rgb, "rgb8", self.config.frame_id, stamp))
        if self._depth_pub is not None and shot.depth is not None:
            self._depth_pub.publish(numpy_to_image(shot.depth, "16UC1", self.config.frame_id, stamp))
        if self._info_pub is not None:
            self._info_pub.publish(camera_info(shot, self.config.frame_id, stamp))
        self.published += 1
        if self.config.frames and self.published >= self.config.frames:
            raise _Done()

    def rate(self) -> float:
        """Frames published per second since start."""
        return self.published / max(1e-9, time.monotonic() - self._started)

    def stop(self) -> None:
        """Ask the producer thread to stop."""
        self._stop.set()
        self._next_scene.set()


class _Done(Exception):
    """Raised by the timer after the requested number of frames."""


def camera_info(shot: Shot, frame_id: str, stamp: Any) -> CameraInfo:
    """A pinhole CameraInfo for the shot: its intrinsics (or a 90-degree guess), no distortion."""
    h, w = shot.rgb.shape[:2]
    k = shot.intrinsics if shot.intrinsics is not None else np.array(
        [[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=float)
    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = h, w
    msg.distortion_model, msg.d = "plumb_bob", [0.0] * 5
    msg.k = [float(v) for v in np.asarray(k, dtype=float).reshape(9)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [msg.k[0], 0.0, msg.k[2], 0.0, 0.0, msg.k[4], msg.k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def run(config: SimCameraConfig) -> int:
    """Publish until Ctrl-C, shutdown or `config.frames` frames; print the achieved rate."""
    node = SimCameraNode(config)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, _Done):
        pass
    finally:
        node.stop()
        node.get_logger().info(f"published {node.published} frames at {node.rate():.1f} Hz")
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    return 0
