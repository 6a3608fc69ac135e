"""ManiSkill side of sim/: importing this package selects the Vulkan driver, then registers our envs with
ManiSkill/gymnasium (`VlkdObjectOnTable-v1`, `VlkdPickClutter-v1`, `VlkdPickClutterYCB-v1`)."""
from sim.backend import configure_vulkan

configure_vulkan()

from sim.envs.clutter import ENV_ID as PICK_CLUTTER_ENV  # noqa: E402
from sim.envs.clutter import YCB_ENV_ID as PICK_CLUTTER_YCB_ENV  # noqa: E402
from sim.envs.object_on_table import ENV_ID as OBJECT_ON_TABLE_ENV  # noqa: E402

__all__ = ["OBJECT_ON_TABLE_ENV", "PICK_CLUTTER_ENV", "PICK_CLUTTER_YCB_ENV"]
