"""Starting the node: the model and state dirs its parameters name, resolved; the model loaded from them; the one-line
reason when they do not load; and the refusal of a second node of the same name (`StartError`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rclpy.lifecycle import LifecycleNode

from vlkd_formats.errors import VlkdError

if TYPE_CHECKING:  # importing vlkd_ros.inference loads the model's libraries: done only when the model is loaded
    from vlkd_ros.inference.protocol import GraspModel

# `run` refuses to start when the ROS graph shows another node of the same fully qualified name within this many
# seconds, before it spins (so before any service answers or the model loads). Discovery takes time: on one host a
# running node showed in the graph after 0.1-1.7 s, and after up to 2.5 s with both cores busy. It also reaches only
# the node's discovery range: a twin that discovery has not shown by then (a slow network, another host not yet
# discovered, a discovery server that is down) is not refused, and two nodes started within the same seconds can
# each see the other and both refuse. Whatever its name, a second node learning into the same model or state dir
# is refused by that dir's writer lock (at its first ~/add_object goal).
TWIN_WAIT_S = 5.0
TWIN_POLL_S = 0.05


class StartError(VlkdError):
    """The node cannot start: a node of its name already runs, or autostart cannot load its model dir."""


def model_paths(model_dir: str, state_dir: str) -> tuple[Path, Path | None]:
    """The grasp model dir and state dir (None: few-shot learning writes into the model dir) that the parameters
    model_dir and state_dir name, absolute, by the rules of `GraspFeasibility.from_checkpoint` ("" model_dir: the
    shipped default model); a VlkdError when there is no grasp model dir there. Reads the model card, loads nothing."""
    from vlkd_formats.model_dir import KIND_GRASP, read_card, resolve_model_dir
    from vlkd_ros.inference.model_paths import default_model_dir, state_dir_for

    root = resolve_model_dir(model_dir or default_model_dir()).resolve()
    read_card(root, KIND_GRASP)
    state = state_dir_for(root, state_dir)
    return root, state.resolve() if state is not None else None


def load_failure(model_dir: str, err: Exception) -> str:
    """The one-line reason a model dir (the parameter; "": the shipped default) could not be loaded."""
    where = repr(model_dir) if model_dir else "the shipped default model dir"
    return " ".join(f"cannot load the model from {where}: {type(err).__name__}: {err}".split())


def load_grasp_model(model_dir: Path, state_dir: Path | None, device: str, backend: str,
                     threads: int = 0) -> GraspModel:
    """Load the grasp-feasibility model of a model dir and state dir as `model_paths` resolved them, through the
    inference API."""
    from vlkd_ros.inference import GraspFeasibility

    return GraspFeasibility.from_checkpoint(model_dir, device=device, backend=backend, threads=threads,
                                            state_dir=state_dir)


def refuse_twin(node: LifecycleNode, wait_s: float = TWIN_WAIT_S) -> None:
    """StartError naming the node when the ROS graph shows another of its fully qualified name within `wait_s`
    (how far this check reaches: TWIN_WAIT_S)."""
    me = (node.get_name(), node.get_namespace())
    end = time.monotonic() + wait_s
    while node.get_node_names_and_namespaces().count(me) < 2:  # this node is one of them
        if time.monotonic() >= end:
            return
        time.sleep(TWIN_POLL_S)
    fqn = node.get_fully_qualified_name()
    raise StartError(f"a node named {fqn} is already running in ROS domain {node.context.get_domain_id()} "
                     f"(`ros2 node info {fqn}` shows it): stop it, or start this one under another name or "
                     "namespace (--ros-args -r __node:=NAME or -r __ns:=/NAMESPACE; launch: namespace:=/NAMESPACE)")
