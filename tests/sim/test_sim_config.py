"""Collector configs: defaults run, YAML then overrides (the one loader, as `vlkd collect` uses it), and bad values
are named."""
import pytest

from sim.config import ClassificationConfig, ClutterConfig
from vlkd_formats.config import ConfigError, load_config, to_dict
from vlkd_formats.errors import VlkdError


def test_defaults_validate():
    assert load_config(ClassificationConfig).per_class == 20
    assert load_config(ClutterConfig).episodes == 50


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("per_class: 7\nimage_size: 96\nrandomization: {fov_deg: [30, 40]}\nlabels: apple, banana\n")
    config = load_config(ClassificationConfig, path, ["per_class=3"])
    assert (config.per_class, config.image_size) == (3, 96)
    assert config.randomization.fov_deg == (30, 40) and isinstance(config.randomization.fov_deg, tuple)
    assert config.labels == ["apple", "banana"]
    assert "workers" not in config.settings() and "num_envs" not in config.settings()


def test_labels_as_a_list_or_a_comma_string():
    assert load_config(ClassificationConfig, None, ["labels=[coffee mug, dice]"]).labels == ["coffee mug", "dice"]
    assert load_config(ClassificationConfig, None, ["labels='coffee mug, dice'"]).labels == ["coffee mug", "dice"]
    assert ClassificationConfig(labels="apple").labels == ["apple"]


def test_settings_round_trip_through_the_loader():
    """A dataset's stored settings load back into the same config (what a resumed collection compares)."""
    config = load_config(ClutterConfig, None, ["episodes=3", "labels=[apple]"])
    again = load_config(ClutterConfig, None, base=config)
    assert to_dict(again) == to_dict(config)


@pytest.mark.parametrize("cls, overrides, message", [
    (ClassificationConfig, ["image_size=4"], "image_size 4"),
    (ClassificationConfig, ["per_class=0"], "per_class"),
    (ClassificationConfig, ["randomization.fov_deg=[0, 10]"], "fov_deg"),
    (ClassificationConfig, ["randomization.elevation_deg=[50, 20]"], "elevation_deg"),
    (ClassificationConfig, ["randomization.zoom=2"], r"unknown key\(s\) \['zoom'\] in randomization"),
    (ClassificationConfig, ["randomization.fov_deg=[30]"], "expected 2 values"),
    (ClassificationConfig, ["colour=red"], r"unknown key\(s\) \['colour'\] in ClassificationConfig"),
    (ClassificationConfig, ["labels=[]"], "zero objects"),
    (ClassificationConfig, ["labels=''"], "zero objects"),
    (ClassificationConfig, ["split=sometimes"], "split"),
    (ClassificationConfig, ["sim_backend=tpu"], "sim_backend"),
    (ClassificationConfig, ["per_class=many"], "expected int"),
    (ClutterConfig, ["max_objects=0"], "zero objects"),
    (ClutterConfig, ["min_objects=5", "max_objects=3"], "min_objects"),
    (ClutterConfig, ["base_camera_eye=[0, 0, 0.5]", "base_camera_target=[0, 0, 0.5]"], "5 cm"),
    (ClutterConfig, ["base_camera_eye=[0, 0, 0.5]", "base_camera_target=[0, 0, 0]"], "straight above"),
    (ClutterConfig, ["base_camera_eye=[0.3, 0, -0.1]"], "below the table"),
    (ClutterConfig, ["base_camera_fov_deg=179"], "fov"),
    (ClutterConfig, ["views_per_scene=0"], "views_per_scene 0"),
    (ClutterConfig, ["camera_poses.azimuth_deg=[10, 20, 30]"], "low high pairs"),
    (ClutterConfig, ["camera_poses.azimuth_deg=[60, -60]"], r"azimuth_deg range \[60.0, -60.0\]"),
    (ClutterConfig, ["camera_poses.azimuth_deg=[-200, 0]"], "-180 <= low"),
    (ClutterConfig, ["camera_poses.elevation_deg=[30, 90]"], "elevation_deg"),
    (ClutterConfig, ["camera_poses.distance_scale=[1.2, 0.8]"], "distance_scale"),
    (ClutterConfig, ["camera_poses.target_jitter=0.5"], "target_jitter"),
    (ClutterConfig, ["views_per_scene=2", "base_camera_target=[0, 0, -0.5]"], "below the table top"),
    (ClutterConfig, ["lighting.light_intensity=[2, 1]"], "light_intensity"),
    (ClutterConfig, ["lighting.ambient=[0, 3]"], "ambient"),
    (ClutterConfig, ["lighting.light_tint=2"], "light_tint"),
    (ClutterConfig, ["camera_poses.zoom=2"], r"unknown key\(s\) \['zoom'\] in camera_poses"),
])
def test_bad_values_are_named(cls, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(cls, None, overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_config(ClutterConfig, tmp_path / "absent.yaml")
    assert isinstance(err.value, VlkdError)


def test_clutter_sections_from_yaml_and_flags_style_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("views_per_scene: 3\ncamera_poses: {azimuth_deg: [60, 90, -90, -60]}\n"
                    "lighting: {random_lighting: true}\n")
    config = load_config(ClutterConfig, path, ["camera_poses.elevation_deg=[20, 40]", "split_seed=4"])
    assert config.views_per_scene == 3 and config.random_views and config.split_seed == 4
    assert config.camera_poses.azimuth_deg == (60, 90, -90, -60) and config.camera_poses.elevation_deg == (20, 40)
    assert config.lighting.random_lighting and config.settings()["camera_poses"]["elevation_deg"] == (20, 40)
