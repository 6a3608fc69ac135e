"""The last step of a collection: `manifest.jsonl` from the finished part rows, then `dataset.json`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlkd_formats.atomic_io import atomic_write_text
from vlkd_formats.dataset_dir import MANIFEST_FILE, DatasetInfo, write_dataset_info


def json_ready(value: Any) -> Any:
    """`value` as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(value))


def write_dataset(out: Path, info: DatasetInfo, rows: list[dict[str, Any]]) -> DatasetInfo:
    """Write the complete manifest atomically (same line format as ManifestWriter), then the validated info."""
    missing = sorted({r["label"] for r in rows if "label" in r} - set(info.labels))
    if missing:
        raise ValueError(f"manifest rows name labels {missing} that dataset.json does not list")
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    atomic_write_text(out / MANIFEST_FILE, text)
    write_dataset_info(out, info)
    return info
