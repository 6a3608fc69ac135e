"""What `vlkd sim-camera` publishes, where and how fast: the camera publisher's config, free of rclpy imports so
the CLI can derive its flags from it (`vlkd_ros.cli.flags`) without loading ROS."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlkd_formats.image_codec import IMAGE_SUFFIXES

CLUTTER_ENV_ID = "VlkdPickClutter-v1"
SOURCES = ("env", "images")
RELIABILITY_NAMES = ("best_effort", "reliable")


@dataclass
class SimCameraConfig:
    """What to publish, where and how fast."""

    source: str = "env"
    env_id: str = CLUTTER_ENV_ID
    images: str = ""
    topic: str = "/camera/image_raw"
    depth_topic: str = ""
    camera_info_topic: str = ""
    hand_topic: str = ""
    hand_depth_topic: str = ""
    frame_id: str = "camera_color_optical_frame"
    hand_frame_id: str = "hand_camera_color_optical_frame"
    rate: float = 30.0
    image_size: int = 224
    camera: str = ""
    hand_camera: str = "hand_camera"
    seed: int = 0
    scene_period: float = 0.0
    sway: float = 0.03
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
        if not 0 <= self.sway <= 0.2:
            raise ValueError(f"sway {self.sway} must be in [0, 0.2] (a fraction of the frame side; 0: a still camera)")
        if self.scene_period < 0 or self.frames < 0:
            raise ValueError(f"scene_period ({self.scene_period}) and frames ({self.frames}) must be >= 0")
        if self.reliability not in RELIABILITY_NAMES:
            raise ValueError(f"reliability {self.reliability!r} is not valid; valid: {', '.join(RELIABILITY_NAMES)}")
        if not self.topic:
            raise ValueError("topic is empty: give the colour image topic")
        return self
