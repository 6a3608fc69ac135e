"""Import paths of the old layout fail with a message naming the new module; real modules are untouched."""
import importlib

import pytest

from vlkd_formats.moved import MOVED


@pytest.mark.parametrize("old", ["training.grasp_train", "vlkd_ros.node", "vlkd_ros.object_registry", "sim.image_io"])
def test_an_old_import_path_says_where_the_module_went(old):
    with pytest.raises(ModuleNotFoundError, match=f"{old} moved to {MOVED[old].split()[0]}"):
        importlib.import_module(old)


def test_every_new_home_exists_and_unknown_modules_fail_as_usual():
    for new in MOVED.values():
        importlib.import_module(new)
    with pytest.raises(ModuleNotFoundError, match="No module named 'training.nothing_here'"):
        importlib.import_module("training.nothing_here")
