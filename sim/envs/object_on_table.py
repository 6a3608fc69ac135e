"""`VlkdObjectOnTable-v1`: one catalogue object resting on a randomised table, seen by one randomised camera.

Every reset rebuilds the scene (object, size, colour, table texture, lights, camera) from the reset seed, so
`env.reset(seed=s, options={"object": "coffee mug"})` always renders the same image (`object` may also be a list,
one name per parallel scene; without it each scene draws a category from its seed). No robot. Works with
`num_envs > 1` (GPU sim): each sub-scene draws its own object, camera, lights and backdrop from its own seed.
What was drawn is in `env.unwrapped.draws` (one `SceneDraw` per sub-scene), the object's names in `object_names`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import sapien
import torch
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import sapien_utils
from mani_skill.utils.registration import register_env
from mani_skill.utils.structs import Actor

from sim.catalog import load_object_set
from sim.envs.builders import add_lights, build_backdrop, object_builder
from sim.geometry import placement, rest_pose
from sim.randomization import (
    RandomizationConfig,
    SceneDraw,
    sample_backdrop,
    sample_camera,
    sample_lighting,
    sample_variation,
)

ENV_ID = "VlkdObjectOnTable-v1"


@register_env(ENV_ID, max_episode_steps=1)
class ObjectOnTableEnv(BaseEnv):
    """A single object on a table, for classification images; all randomisation comes from the reset seed."""

    SUPPORTED_ROBOTS = ["none"]
    SUPPORTED_REWARD_MODES = ["none"]

    def __init__(self, *args, object_set: str = "offline", objects: list[str] | None = None,
                 randomization: dict[str, Any] | None = None, image_size: int = 128, robot_uids: str = "none",
                 **kwargs):
        self.catalog = load_object_set(object_set).select(objects)
        self.randomization = RandomizationConfig(**(randomization or {})).validate()
        self.image_size = int(image_size)
        self.draws: list[SceneDraw] = []
        self.object_names: list[str] = []
        super().__init__(*args, robot_uids=robot_uids, reconfiguration_freq=1, **kwargs)

    @property
    def _default_sensor_configs(self):
        eyes = torch.tensor([d.camera.eye for d in self.draws], dtype=torch.float32)
        targets = torch.tensor([d.camera.target for d in self.draws], dtype=torch.float32)
        fovs = [math.radians(d.camera.fov_deg) for d in self.draws]
        pose = sapien_utils.look_at(eyes, targets)
        return [CameraConfig("base_camera", pose=pose, width=self.image_size, height=self.image_size,
                             fov=fovs if len(fovs) > 1 else fovs[0], near=0.01, far=10)]

    def _load_scene(self, options: dict):
        self.draws, self.object_names, actors = [], [], []
        wanted = options.get("object")
        if isinstance(wanted, str) or wanted is None:
            wanted = [wanted] * self.num_envs
        if len(wanted) != self.num_envs:
            raise ValueError(f"options['object'] names {len(wanted)} objects for {self.num_envs} parallel scenes")
        for i in range(self.num_envs):
            rng = np.random.default_rng(int(self._episode_seed[i]))
            name = wanted[i] or str(rng.choice(self.catalog.names))
            spec = self.catalog.get(name)
            variation = sample_variation(rng, self.randomization)
            place = placement(spec)
            extents = np.asarray(place.extents) * variation.scale
            xy = rng.uniform(-0.05, 0.05, 2)
            yaw = float(rng.uniform(0, 360))
            camera = sample_camera(rng, self.randomization, np.array([xy[0], xy[1], extents[2] / 2]),
                                   float(extents.max()))
            draw = SceneDraw(variation, camera, sample_lighting(rng, self.randomization),
                             sample_backdrop(rng, self.randomization), yaw, (float(xy[0]), float(xy[1])))
            builder = object_builder(self.scene, spec, variation, collision=False)
            pose = rest_pose(place, variation.scale, xy[0], xy[1], 0.0, yaw)
            builder.initial_pose = sapien.Pose(p=pose[:3], q=pose[3:])
            builder.set_scene_idxs([i])
            actors.append(builder.build_kinematic(name=f"object_{i}"))
            build_backdrop(self.scene, draw.backdrop, [i], name=f"backdrop_{i}")
            self.draws.append(draw)
            self.object_names.append(name)
        self.target = Actor.merge(actors, name="target")

    def _load_lighting(self, options: dict):
        for i, draw in enumerate(self.draws):
            add_lights(self.scene, draw.lighting, i)

    def _get_obs_agent(self):
        return dict()

    def get_state_dict(self):
        return self.scene.get_sim_state()

    def evaluate(self) -> dict:
        return dict()
