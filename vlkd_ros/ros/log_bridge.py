"""The log bridge: Python `logging` records of the model code (vlkd_ros, training) forwarded to a ROS logger."""
from __future__ import annotations

import logging
from typing import Any

BRIDGED_LOGGERS = ("vlkd_ros", "training")  # Python loggers of the model code, forwarded to the ROS logger


class RosLogHandler(logging.Handler):
    """Forwards Python `logging` records (the inference API's) to a ROS logger; tracebacks only at debug."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        """Log the record's message (and its exception's one-line summary) at the matching ROS severity."""
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                err = record.exc_info[1]
                text += f": {type(err).__name__}: {err}"
                self.ros_logger.debug(logging.Formatter().formatException(record.exc_info))
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise into the model's threads
            self.handleError(record)


def attach(ros_logger: Any) -> RosLogHandler:
    """Route the bridged loggers (INFO and up) to `ros_logger` only; return the handler for `detach`."""
    handler = RosLogHandler(ros_logger)
    for name in BRIDGED_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return handler


def detach(handler: RosLogHandler) -> None:
    """Remove the handler from the bridged loggers and let them propagate again."""
    for name in BRIDGED_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).propagate = True
