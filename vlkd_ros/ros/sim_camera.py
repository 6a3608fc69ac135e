"""ROS 2 node `vlkd_sim_camera`: streams camera frames from the ManiSkill clutter env, recorded episodes or images.

A background thread renders (or reads) frames; a timer publishes the newest one at the requested rate with a
fresh stamp, so slow rendering or a scene reset never stalls the stream. `env` source: each scene is rendered
once (the table is static), the camera sways over it (`sway`: a slow circle of small pans, so successive frames are
distinct views), and a new scene is drawn every `scene_period` seconds.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image as PILImage
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from vlkd_formats.dataset_dir import episode_view_path
from vlkd_formats.image_codec import IMAGE_SUFFIXES, is_image_file, open_rgb, read_depth
from vlkd_ros.ros.image_msgs import numpy_to_image
from vlkd_ros.ros.sim_camera_config import CLUTTER_ENV_ID, SOURCES, SimCameraConfig  # noqa: F401 (re-exported)

RELIABILITIES = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
SWAY_PERIOD_S = 4.0  # one turn of the camera's sway circle


@dataclass
class Shot:
    """One rendered view: RGB uint8 HxWx3, optional depth uint16 mm HxW, optional 3x3 intrinsics, and the same
    from the wrist (hand) camera when the source has one."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    label: str = ""
    hand_rgb: np.ndarray | None = None
    hand_depth: np.ndarray | None = None


def image_folder_shots(folder: str | Path, size: int) -> Iterator[Shot]:
    """Cycle forever over a folder's images, resized to size x size.

    A folder of recorded clutter episodes (the views `vlkd_formats.dataset_dir.EPISODE_VIEWS`, base_rgb required,
    as in a clutter dataset's `episodes/`) replays every view; otherwise each image file (sorted, recursive) is one
    colour frame.
    """
    marker = episode_view_path(folder, "base_rgb").name  # an episode folder is one holding a base_rgb view
    episodes = sorted(p.parent for p in Path(folder).rglob(marker))
    if episodes:
        shots = [Shot(_episode_view(e, "base_rgb", size), _episode_view(e, "base_depth", size), label=e.name,
                      hand_rgb=_episode_view(e, "hand_rgb", size), hand_depth=_episode_view(e, "hand_depth", size))
                 for e in episodes]
    else:
        files = sorted(p for p in Path(folder).rglob("*") if is_image_file(p))
        shots = [Shot(_resized_rgb(p, size), label=p.parent.name) for p in files]
    if not shots:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {folder}")
    while True:
        yield from shots


def _episode_view(episode: Path, view: str, size: int) -> np.ndarray | None:
    """One view of a recorded episode resized to size x size (depth: nearest, uint16 mm), None if not recorded."""
    path = episode_view_path(episode, view)
    if not path.is_file():
        return None
    if view.endswith("_depth"):
        return np.asarray(PILImage.fromarray(read_depth(path)).resize((size, size), PILImage.NEAREST)).astype(np.uint16)
    return _resized_rgb(path, size)


def _resized_rgb(path: Path, size: int) -> np.ndarray:
    """A colour image file as RGB uint8, resized to size x size."""
    return np.asarray(open_rgb(path).resize((size, size)))


def clutter_env_shots(config: SimCameraConfig) -> Iterator[Shot]:
    """Render a new clutter scene per call to next(): RGB, depth and intrinsics of one env camera."""
    import gymnasium as gym

    import sim.envs  # noqa: F401 - registers the project's ManiSkill envs
    from sim.envs.make import make_env

    if config.env_id not in gym.registry:
        raise ValueError(f"env {config.env_id!r} is not registered; registered vlkd envs: "
                         f"{', '.join(k for k in gym.registry if k.startswith('Vlkd')) or 'none'}")
    env = make_env(config.env_id, config.sim_backend, obs_mode="rgbd",
                   sensor_configs=dict(width=config.image_size, height=config.image_size))
    try:
        seed = config.seed
        while True:
            obs, _ = env.reset(seed=seed)
            seed += 1
            cameras = obs["sensor_data"]
            name = config.camera or ("base_camera" if "base_camera" in cameras else next(iter(cameras)))
            if name not in cameras:
                raise ValueError(f"camera {name!r} not in env {config.env_id}; cameras: {', '.join(cameras)}")
            rgb, depth = _camera_arrays(cameras[name])
            param = obs.get("sensor_param", {}).get(name, {})
            k = _numpy(param["intrinsic_cv"])[0] if "intrinsic_cv" in param else None
            hand_rgb = hand_depth = None
            if config.hand_topic or config.hand_depth_topic:
                if config.hand_camera not in cameras:
                    raise ValueError(f"hand camera {config.hand_camera!r} not in env {config.env_id}; cameras: "
                                     f"{', '.join(cameras)}")
                hand_rgb, hand_depth = _camera_arrays(cameras[config.hand_camera])
            yield Shot(rgb, depth, k, label=f"seed {seed - 1}", hand_rgb=hand_rgb, hand_depth=hand_depth)
    finally:
        env.close()


def _camera_arrays(data: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB uint8 HxWx3, depth uint16 mm HxW or None) of one ManiSkill camera's sensor data (first scene)."""
    rgb = _numpy(data["rgb"])[0, ..., :3].astype(np.uint8)
    depth = _numpy(data["depth"])[0, ..., 0].clip(0, 65535).astype(np.uint16) if "depth" in data else None
    return rgb, depth


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
        # stream -> publisher; shot_messages() builds each stream's message from a Shot
        topics = {"rgb": config.topic, "depth": config.depth_topic, "info": config.camera_info_topic,
                  "hand_rgb": config.hand_topic, "hand_depth": config.hand_depth_topic}
        self._pubs = {stream: self.create_publisher(CameraInfo if stream == "info" else Image, topic, qos)
                      for stream, topic in topics.items() if topic}
        self._shots = shots if shots is not None else (
            image_folder_shots(config.images, config.image_size) if config.source == "images"
            else clutter_env_shots(config))
        self._latest: Shot | None = None
        self._messages: tuple[Shot | None, dict] = (None, {})
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
        if self.config.source == "env" and self.config.sway > 0:  # a new view per publish
            turn = (time.monotonic() - self._started) / SWAY_PERIOD_S if self.published else 0.0
            seen = swayed(shot, self.config.sway, turn)
            messages = shot_messages(seen, self.config.frame_id, self.config.hand_frame_id)
        else:  # convert each shot once; later publishes only restamp it
            if self._messages[0] is not shot:
                self._messages = (shot, shot_messages(shot, self.config.frame_id, self.config.hand_frame_id))
            messages = self._messages[1]
        stamp = self.get_clock().now().to_msg()
        for stream, msg in messages.items():
            if stream in self._pubs:
                msg.header.stamp = stamp
                self._pubs[stream].publish(msg)
        if self.published == 0:
            self._started = time.monotonic()
        self.published += 1
        if self.config.frames and self.published >= self.config.frames:
            raise _Done()

    def rate(self) -> float:
        """Frames published per second since the first one."""
        return max(0, self.published - 1) / max(1e-9, time.monotonic() - self._started)

    def stop(self) -> None:
        """Ask the producer thread to stop."""
        self._stop.set()
        self._next_scene.set()


class _Done(Exception):
    """Raised by the timer after the requested number of frames."""


def swayed(shot: Shot, sway: float, turn: float) -> Shot:
    """The base camera's view of `shot` panned along a circle of radius `sway` (a fraction of the frame side) at
    `turn` turns: its frame cropped to (1 - 2 sway) of each side around the shifted centre and resized back (depth
    by nearest pixel), the intrinsics moved and scaled to match; the wrist camera's views unchanged."""
    h, w = shot.rgb.shape[:2]
    dx, dy = sway * w * math.cos(2 * math.pi * turn), sway * h * math.sin(2 * math.pi * turn)
    box = (sway * w + dx, sway * h + dy, (1 - sway) * w + dx, (1 - sway) * h + dy)
    sx, sy = w / (box[2] - box[0]), h / (box[3] - box[1])
    rgb = np.asarray(PILImage.fromarray(shot.rgb).resize((w, h), PILImage.BILINEAR, box=box))
    depth = None if shot.depth is None else np.asarray(
        PILImage.fromarray(shot.depth).resize((w, h), PILImage.NEAREST, box=box)).astype(np.uint16)
    k = shot.intrinsics
    if k is not None:
        k = np.array(k, dtype=float)
        k[0, 0], k[0, 2] = k[0, 0] * sx, (k[0, 2] - box[0]) * sx
        k[1, 1], k[1, 2] = k[1, 1] * sy, (k[1, 2] - box[1]) * sy
    return replace(shot, rgb=rgb, depth=depth, intrinsics=k)


def shot_messages(shot: Shot, frame_id: str, hand_frame_id: str) -> dict:
    """The messages of every stream the shot has: rgb, depth, info, hand_rgb, hand_depth."""
    out = {"rgb": numpy_to_image(shot.rgb, "rgb8", frame_id), "info": camera_info(shot, frame_id)}
    if shot.depth is not None:
        out["depth"] = numpy_to_image(shot.depth, "16UC1", frame_id)
    if shot.hand_rgb is not None:
        out["hand_rgb"] = numpy_to_image(shot.hand_rgb, "rgb8", hand_frame_id)
    if shot.hand_depth is not None:
        out["hand_depth"] = numpy_to_image(shot.hand_depth, "16UC1", hand_frame_id)
    return out


def camera_info(shot: Shot, frame_id: str, stamp: Any = None) -> CameraInfo:
    """A pinhole CameraInfo for the shot: its intrinsics (or fx = fy = width as a guess), no distortion."""
    h, w = shot.rgb.shape[:2]
    k = shot.intrinsics if shot.intrinsics is not None else np.array(
        [[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=float)
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
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
        summary = f"published {node.published} frames at {node.rate():.1f} Hz"
        if node.context.ok():
            node.get_logger().info(summary)
        else:  # Ctrl-C already shut the context down: rosout is gone
            print(f"[vlkd_sim_camera] {summary}", file=sys.stderr, flush=True)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    return 0
