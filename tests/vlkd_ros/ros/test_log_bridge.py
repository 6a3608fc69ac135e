"""vlkd_ros.ros.log_bridge: the model code's Python log records reach a real ROS logger, at the same severity."""
import logging

import pytest

rclpy_logging = pytest.importorskip("rclpy.logging", reason="needs the ROS 2 wheels (requirements-ros.txt)")

from vlkd_ros.ros import log_bridge  # noqa: E402


@pytest.fixture
def ros_logger():
    """A real rclpy logger of this test (printed on stderr by rcutils)."""
    logger = rclpy_logging.get_logger("vlkd_test_log_bridge")
    logger.set_level(rclpy_logging.LoggingSeverity.INFO)
    return logger


def test_records_reach_the_ros_logger_at_their_severity(ros_logger, capfd) -> None:
    """info/warning/error of the bridged loggers (and their children) come out as ROS INFO/WARN/ERROR only."""
    handler = log_bridge.attach(ros_logger)
    try:
        logging.getLogger("vlkd_ros.inference.grasp").info("loaded %d objects", 4)
        logging.getLogger("training.grasp").warning("few shots")
        logging.getLogger("vlkd_ros").error("job failed")
        logging.getLogger("vlkd_ros.inference.grasp").debug("not shown")
        logging.getLogger("elsewhere").error("not bridged")
        assert not logging.getLogger("vlkd_ros").propagate
    finally:
        log_bridge.detach(handler)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "[vlkd_test_log_bridge]" in line]
    assert [line.split(" ")[0] for line in lines] == ["[INFO]", "[WARN]", "[ERROR]"], err
    assert lines[0].endswith("[vlkd_test_log_bridge]: vlkd_ros.inference.grasp: loaded 4 objects")
    assert lines[1].endswith(": training.grasp: few shots") and lines[2].endswith(": vlkd_ros: job failed")
    assert all(logging.getLogger(name).propagate for name in log_bridge.BRIDGED_LOGGERS)
    assert handler not in logging.getLogger("vlkd_ros").handlers


def test_exceptions_give_one_line_and_a_debug_traceback(ros_logger, capfd) -> None:
    """An exception adds its type and text to the line; the traceback goes to debug only."""
    handler = log_bridge.attach(ros_logger)
    try:
        try:
            raise ValueError("bad shots")
        except ValueError:
            logging.getLogger("vlkd_ros.inference.grasp").exception("few-shot job abc failed")
        ros_logger.set_level(rclpy_logging.LoggingSeverity.DEBUG)
        try:
            raise KeyError("x")
        except KeyError:
            logging.getLogger("training").warning("retrying", exc_info=True)
    finally:
        log_bridge.detach(handler)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "[vlkd_test_log_bridge]" in line]
    assert lines[0].startswith("[ERROR]")
    assert lines[0].endswith(": vlkd_ros.inference.grasp: few-shot job abc failed: ValueError: bad shots")
    assert "Traceback" not in "\n".join(lines[:1])
    assert lines[1].startswith("[DEBUG]") and "Traceback (most recent call last):" in lines[1]
    assert "KeyError: 'x'" in err
    assert [line for line in lines if line.startswith("[WARN]")][0].endswith(": training: retrying: KeyError: 'x'")
