"""Dataset cards: `CARD.md` (counts per label and split, settings, provenance) and `montage.png` next to the data."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from sim.objects import ObjectSet
from vlkd_formats.atomic_io import atomic_write_text
from vlkd_formats.dataset_dir import SPLITS, DatasetInfo
from vlkd_formats.image_codec import read_depth, read_rgb, write_rgb_png

CAPTION_HEIGHT = 14
TILE_SIZE = 128
DEPTH_VIEW_MAX_MM = 2000


def classification_card(info: DatasetInfo, rows: list[dict[str, Any]], catalog: ObjectSet) -> str:
    """Markdown card of a classification dataset."""
    counts = Counter((r["label"], r["split"]) for r in rows)
    table = _count_table(info, lambda label, split: str(counts[(label, split)]))
    intro = (f"{len(rows)} images of {len(info.labels)} categories, one object per image on a randomised table "
             "(pose, size, colour, lighting, camera, table texture). ImageFolder layout: `<split>/<slug>/*.png`, "
             "slug = label with spaces replaced by underscores; `manifest.jsonl` maps every image to its label, seed, "
             "camera and render settings.")
    return _card("classification", info, intro, table, catalog)


def clutter_card(info: DatasetInfo, rows: list[dict[str, Any]], catalog: ObjectSet, rule: str) -> str:
    """Markdown card of a clutter dataset (cells: observations, i.e. (scene, view) rows, where the object is present /
    graspable)."""
    present, graspable = Counter(), Counter()
    for row in rows:
        for obj in row["objects"]:
            present[(obj["name"], row["split"])] += int(obj["present"])
            graspable[(obj["name"], row["split"])] += int(obj["graspable"])
    table = _count_table(info, lambda label, split: f"{present[(label, split)]} / {graspable[(label, split)]}")
    episodes = Counter(r["split"] for r in rows)
    scenes = len({r["scene"] for r in rows})
    intro = (f"{len(rows)} observations of {scenes} table scenes ({', '.join(f'{s}: {episodes[s]}' for s in SPLITS)}"
             " observations; all base-camera views of a scene share its split), each with base and hand camera RGB "
             "(8-bit PNG), depth (16-bit PNG, millimetres) and object masks (8-bit PNG, pixel k = the row's k-th "
             "object) under `episodes/<index>/`. Table cells: observations where the object is present / graspable."
             "\n\n**Graspable rule.** " + rule)
    return _card("clutter", info, intro, table, catalog)


def write_card(out: Path, text: str) -> Path:
    """Write `CARD.md` atomically."""
    return atomic_write_text(out / "CARD.md", text)


def write_montage(out: Path, tiles: Sequence[tuple[Sequence[str], str]], columns: int = 8) -> Path:
    """Write `montage.png`: each tile is images (paths relative to `out`, shown side by side) under a caption."""
    rendered = [_tile(out, paths, caption) for paths, caption in tiles]
    width = max(t.shape[1] for t in rendered)
    rendered = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in rendered]
    columns = max(1, min(columns, len(rendered), 2048 // width))
    blank = np.zeros_like(rendered[0])
    rendered += [blank] * (-len(rendered) % columns)
    grid = np.concatenate([np.concatenate(rendered[i:i + columns], axis=1)
                           for i in range(0, len(rendered), columns)], axis=0)
    return write_rgb_png(out / "montage.png", grid)


def _tile(out: Path, paths: Sequence[str], caption: str) -> np.ndarray:
    images = [_as_rgb(out / p) for p in paths]
    strip = np.concatenate([cv2.resize(i, (TILE_SIZE, TILE_SIZE), interpolation=cv2.INTER_AREA) for i in images], 1)
    bar = np.zeros((CAPTION_HEIGHT, strip.shape[1], 3), dtype=np.uint8)
    cv2.putText(bar, caption[: strip.shape[1] // 6], (2, CAPTION_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, strip], axis=0)


def _as_rgb(path: Path) -> np.ndarray:
    if "depth" not in path.name:
        return read_rgb(path)
    depth = read_depth(path).astype(np.float32)
    valid = depth[(depth > 0) & (depth < DEPTH_VIEW_MAX_MM)]
    lo, hi = (np.percentile(valid, 1), np.percentile(valid, 99)) if valid.size else (0.0, 1.0)
    scaled = np.clip((depth - lo) / max(hi - lo, 1.0), 0, 1)
    return cv2.cvtColor(cv2.applyColorMap((255 - scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS),
                        cv2.COLOR_BGR2RGB)


def _count_table(info: DatasetInfo, cell) -> str:
    kinds = {n: "id" for n in info.split.get("id", [])} | {n: "ood" for n in info.split.get("ood", [])}
    lines = ["| label | id/ood | " + " | ".join(SPLITS) + " |", "|---|---|" + "---|" * len(SPLITS)]
    lines += [f"| {label} | {kinds.get(label, '-')} | " + " | ".join(cell(label, s) for s in SPLITS) + " |"
              for label in info.labels]
    return "\n".join(lines)


def _card(kind: str, info: DatasetInfo, intro: str, table: str, catalog: ObjectSet) -> str:
    used = [catalog.get(n) for n in info.labels]
    sources = sorted({(o.source, o.license) for o in used})
    provenance = "\n".join(f"- `{s}`: {lic}" + _source_note(catalog, s) for s, lic in sources)
    split = (f"- in-distribution (Y_id, {len(info.split['id'])}): {', '.join(info.split['id'])}\n"
             f"- out-of-distribution (Y_ood, {len(info.split['ood'])}): {', '.join(info.split['ood']) or 'none'}")
    descriptions = "\n".join(f"- **{n}**: {info.descriptions.get(n, '')}" for n in info.labels)
    return (f"# Dataset card: {kind} ({catalog.name} objects)\n\n{intro}\n\n![samples](montage.png)\n\n"
            f"## Split\n{split}\n\n## Counts\n{table}\n\n## Categories\n{descriptions}\n\n"
            f"## Object sources and licences\n{provenance}\n\n## Settings\n```yaml\n"
            f"{yaml.safe_dump(info.settings, sort_keys=True)}```\n")


def _source_note(catalog: ObjectSet, source: str) -> str:
    for entry in catalog.sources:
        if entry.get("id") == source:
            extra = [str(entry[k]) for k in ("package", "url") if entry.get(k)]
            return f" ({', '.join(extra)})" if extra else ""
    return ""
