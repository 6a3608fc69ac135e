"""`vlkd collect` bad input: one clear line on stderr, exit status 2, nothing half-written."""
import os
import subprocess
import sys

import pytest

from vlkd_ros.cli import build_parser, main


@pytest.mark.parametrize("argv, message", [
    (["classification", "--labels", "cofee mug"], "unknown object 'cofee mug'"),
    (["classification", "--labels", ""], "zero objects"),
    (["classification", "--image-size", "4"], "image_size 4"),
    (["classification", "--objects", "nothing.yaml"], "nothing.yaml not found"),
    (["clutter", "--max-objects", "0"], "zero objects"),
    (["classification", "--split", "none", "--ood-fraction", "1.5"], "ood_fraction"),
    (["clutter", "--views-per-scene", "0"], "views_per_scene 0"),
    (["clutter", "--azimuth-deg", "10", "20", "30"], "low high pairs"),
    (["clutter", "--elevation-deg", "40", "95"], "elevation_deg"),
    (["clutter", "--light-intensity", "2", "1"], "light_intensity"),
])
def test_bad_input_exits_2(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["collect", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("vlkd collect: error:") and not out.exists()


def test_config_file_then_flags(tmp_path, capsys):
    """`--config my.yaml` is read (its bad image size is named) and a flag given with it wins over it."""
    config = tmp_path / "my.yaml"
    config.write_text("image_size: 4\nepisodes: 2\n")
    out = tmp_path / "out"
    assert main(["collect", "clutter", "--config", str(config), "--out", str(out)]) == 2
    assert "image_size 4" in capsys.readouterr().err
    assert main(["collect", "clutter", "--config", str(config), "--image-size", "64", "--max-objects", "0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "zero objects" in err and "image_size" not in err and not out.exists()
    assert main(["collect", "classification", "--config", str(tmp_path / "nothing.yaml"), "--out", str(out)]) == 2
    assert "nothing.yaml does not exist" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_gpu_backend_without_gpu(tmp_path, capsys):
    assert main(["collect", "classification", "--sim-backend", "gpu", "--out", str(tmp_path / "o")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.sim
def test_no_vulkan_device_says_what_to_install(tmp_path):
    env = {**os.environ, "VK_DRIVER_FILES": str(tmp_path / "no_such_icd.json")}
    result = subprocess.run([sys.executable, "-m", "vlkd_ros.cli", "collect", "classification", "--labels", "apple",
                             "--split", "none", "--per-class", "1", "--out", str(tmp_path / "o")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "mesa-vulkan-drivers" in result.stderr and not (tmp_path / "o" / "manifest.jsonl").exists()


def test_clutter_view_and_lighting_flags_set_their_sections():
    """`--azimuth-deg` and the other section flags reach `camera_poses.*` / `lighting.*`; a shipped config is found
    by its name and flags win over it."""
    from sim.config import ClutterConfig
    from vlkd_formats.config import load_config
    from vlkd_ros.cli.flags import flag_overrides

    args = build_parser().parse_args(["collect", "clutter", "--config", "clutter_heldout", "--views-per-scene", "2",
                                      "--azimuth-deg", "-90", "-70", "--elevation-deg", "20", "40",
                                      "--random-lighting", "--light-intensity", "0.2", "0.4", "--split-seed", "3"])
    config = load_config(ClutterConfig, args.config, flag_overrides(args))
    assert (config.views_per_scene, config.split_seed, config.seed) == (2, 3, 1000)
    assert config.camera_poses.azimuth_deg == (-90, -70) and config.camera_poses.elevation_deg == (20, 40)
    assert config.lighting.random_lighting and config.lighting.light_intensity == (0.2, 0.4)
    assert config.ood_episode_fraction == 0.5  # from the shipped file
