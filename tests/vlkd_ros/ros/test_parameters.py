"""vlkd_ros.ros.parameters: the parameter table, the shipped params file against it, change and view checks."""
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (requirements-ros.txt)")

from vlkd_ros.ros.parameters import (PARAMETERS, SPECS, VIEW_TOPICS, ParamSpec, accepted_changes,  # noqa: E402
                                     check_choices, configure_values, served_views)

PARAMS_FILE = Path(__file__).resolve().parents[3] / "config" / "perception.yaml"


def in_range(spec: ParamSpec, value: object) -> bool:
    """Whether `value` has the default's type and lies in the spec's range and choices."""
    if type(value) is not type(spec.default):
        return False
    low, high = spec.float_range or spec.int_range or (value, value)
    return low <= value <= high and (not spec.choices or value in spec.choices)


def test_table_is_consistent() -> None:
    """Unique names, a known `when`, every default valid, and a descriptor carrying the ranges and choices."""
    assert len(SPECS) == len(PARAMETERS)
    for spec in PARAMETERS:
        assert spec.when in ("runtime", "configure", "startup"), spec
        assert in_range(spec, spec.default), spec
        desc = spec.descriptor()
        assert desc.name == spec.name and desc.description.startswith(spec.description)
        assert desc.read_only == (spec.when == "startup")
        if spec.float_range:
            assert (desc.floating_point_range[0].from_value, desc.floating_point_range[0].to_value) == spec.float_range
        if spec.int_range:
            assert (desc.integer_range[0].from_value, desc.integer_range[0].to_value) == spec.int_range
        if spec.choices:
            assert desc.additional_constraints == f"one of: {', '.join(spec.choices)}"
    assert "read in on_configure" in SPECS["model_dir"].descriptor().description
    assert SPECS["image_reliability"].choices == ("best_effort", "reliable")


def test_shipped_params_file_sets_every_parameter_validly() -> None:
    """config/perception.yaml sets exactly the declared parameters, each to a valid value."""
    (section,) = yaml.safe_load(PARAMS_FILE.read_text()).values()
    values = section["ros__parameters"]
    assert set(values) == set(SPECS)
    bad = {name: value for name, value in values.items() if not in_range(SPECS[name], value)}
    assert not bad, f"{PARAMS_FILE} has invalid values: {bad}"
    check_choices(values)


def test_check_choices_names_the_valid_values() -> None:
    """A value outside a parameter's choices is refused with the choices; others pass."""
    check_choices({"image_reliability": "reliable", "threshold": 7.0, "use_sim_time": True})
    with pytest.raises(ValueError, match="image_reliability='sometimes' is not valid; valid: best_effort, reliable"):
        check_choices({"image_reliability": "sometimes"})


def test_configure_time_changes_only_while_unconfigured() -> None:
    """Run-time parameters change in any state; configure-time ones only unconfigured; others are ignored."""
    assert accepted_changes({"threshold": 0.5, "use_sim_time": True}, "active") == {"threshold": 0.5}
    with pytest.raises(ValueError) as err:
        accepted_changes({"threshold": 0.5, "model_dir": "/elsewhere"}, "active")
    assert str(err.value) == ("model_dir is read in on_configure and the node is active: deactivate and clean it up, "
                              "set model_dir, then configure and activate")
    assert accepted_changes({"model_dir": "/m", "image_reliability": "reliable"}, "unconfigured") == {
        "model_dir": "/m", "image_reliability": "reliable"}
    with pytest.raises(ValueError, match="image_reliability='often' is not valid"):
        accepted_changes({"image_reliability": "often"}, "unconfigured")


def test_configure_values_are_the_configure_time_parameters() -> None:
    """on_configure reads exactly the parameters marked `configure`, every view topic among them."""
    values = {spec.name: spec.default for spec in PARAMETERS}
    config = configure_values(values)
    assert set(config) == {spec.name for spec in PARAMETERS if spec.when == "configure"}
    assert set(VIEW_TOPICS.values()) <= set(config)
    assert config["image_topic"] == "/camera/image_raw"


@pytest.mark.parametrize("views", [["base_rgb"], ["base_rgb", "base_depth", "hand_rgb", "hand_depth"]])
def test_served_views(views: list[str]) -> None:
    """Known views with base_rgb first are served as they are."""
    assert served_views(tuple(views)) == views


@pytest.mark.parametrize("views", [[], ["base_depth", "base_rgb"], ["base_rgb", "thermal"]])
def test_unservable_views_are_refused(views: list[str]) -> None:
    """No views, base_rgb not first, or an unknown view: ValueError naming what the node serves."""
    with pytest.raises(ValueError, match=r"model views .* are not supported; the node serves \['base_rgb', "
                                         r"'base_depth', 'hand_rgb', 'hand_depth'\] with base_rgb first"):
        served_views(views)
