"""ManiSkill's YCB objects as an object set, behind an asset check that never lets ManiSkill ask to download.

ManiSkill keeps assets under `$MS_ASSET_DIR/data` (default `~/.maniskill/data`). When they are missing, ManiSkill's
env creation asks "download them now? (y|n)" on stdin; we check first and fail with the command to run instead.
YCB object models: CC BY 4.0 (https://www.ycbbenchmarks.com), packaged by ManiSkill.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sim.errors import SimUnavailableError
from sim.objects import MeshRef, ObjectSet, ObjectSpec
from vlkd_formats.split import read_split_file

YCB_ASSETS = "ycb"
CLUTTER_EPISODES_ASSETS = "pick_clutter_ycb_configs"
YCB_LICENSE = "CC BY 4.0 (YCB object set, https://www.ycbbenchmarks.com), packaged by ManiSkill"
PAPER_SPLIT = Path(__file__).parent / "assets" / "splits" / "ycb_paper.yaml"


def paper_split() -> dict[str, list[str]]:
    """The paper's YCB ID/OOD split (PAPER_SPLIT: 14 id, 12 ood objects), labels spelled as `ycb_label` does."""
    return read_split_file(PAPER_SPLIT)


def download_command(asset_ids: list[str]) -> str:
    """The shell command that downloads ManiSkill data sources without prompting."""
    return " && ".join(f"python -m mani_skill.utils.download_asset {a} -y" for a in asset_ids)


def require_assets(asset_ids: list[str]) -> None:
    """Raise SimUnavailableError with the download command when any of ManiSkill's data sources is missing."""
    from mani_skill.utils.assets import DATA_SOURCES, is_data_source_downloaded

    missing = [a for a in asset_ids if not is_data_source_downloaded(a)]
    if missing:
        where = ", ".join(str(DATA_SOURCES[a].output_dir / DATA_SOURCES[a].target_path) for a in missing)
        raise SimUnavailableError(
            f"ManiSkill assets {', '.join(missing)} are not installed (looked in {where}; MS_ASSET_DIR="
            f"{os.environ.get('MS_ASSET_DIR', 'unset, so ~/.maniskill')}). Download them with: "
            f"{download_command(missing)}  (or use --objects offline, which needs no download)")


def ycb_label(model_id: str) -> str:
    """Human-readable label of a YCB model id ("002_master_chef_can" -> "master chef can")."""
    return re.sub(r"^\d+_", "", model_id).replace("_", " ").lower()


def load_ycb_set() -> ObjectSet:
    """The YCB models ManiSkill ships (textured.obj + convex collision.ply), at ManiSkill's scale."""
    from mani_skill.utils.assets import DATA_SOURCES

    require_assets([YCB_ASSETS])
    source = DATA_SOURCES[YCB_ASSETS]
    root = Path(source.output_dir) / source.target_path
    info = json.loads((root / "info_pick_v0.json").read_text())
    objects = []
    for model_id, meta in sorted(info.items()):
        scale = float(meta.get("scales", [1.0])[0])
        lo, hi = meta["bbox"]["min"], meta["bbox"]["max"]
        size = max(h - l for h, l in zip(hi, lo)) * scale
        folder = root / "models" / model_id
        mesh = MeshRef(folder / "textured.obj", folder / "collision.ply", convex_parts=True)
        name = ycb_label(model_id)
        objects.append(ObjectSpec(name=name, description=f"a {name} from the YCB object set", set_name="ycb",
                                  size=size, mesh=mesh, asset_id=model_id, source="ycb", license=YCB_LICENSE))
    return ObjectSet("ycb", "YCB objects packaged by ManiSkill", tuple(objects),
                     ({"id": "ycb", "license": YCB_LICENSE, "url": "https://www.ycbbenchmarks.com"},))
