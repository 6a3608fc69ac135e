"""sim/ stays import-light: only sim.envs (and what runs a render) loads SAPIEN / ManiSkill."""
import subprocess
import sys

MODULES = ["sim", "sim.objects", "sim.catalog", "sim.ycb", "sim.geometry", "sim.config", "sim.plan",
           "sim.collect_classification", "sim.collect_clutter", "sim.card", "sim.shards", "vlkd_ros.cli.collect"]


def test_library_modules_do_not_import_the_simulator():
    code = (f"import sys\nfor m in {MODULES!r}: __import__(m)\n"
            "heavy = [m for m in ('sapien', 'mani_skill', 'rclpy') if m in sys.modules]\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
