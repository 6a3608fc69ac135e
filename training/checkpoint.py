"""Checkpoints and model dirs: safetensors weights plus small JSON state, written atomically.

A checkpoint is a folder `checkpoints/epoch-NNNN/` made under a temporary name and renamed when complete;
`checkpoints/latest.json` is then replaced atomically, so killing the process at any moment leaves the
last good checkpoint intact and `--resume` finds it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlkd_formats.atomic_io import atomic_write_json
from vlkd_formats.errors import VlkdError

LATEST = "latest.json"


class CheckpointError(VlkdError, ValueError):
    """A checkpoint or model dir is missing, incomplete, or from another architecture."""


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write a tensor dict as safetensors (contiguous copies, shared storage allowed)."""
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path), metadata=metadata)


def load_weights_into(model: nn.Module, path: str | os.PathLike, what: str = "weights") -> None:
    """Load safetensors weights into `model`, explaining a mismatch instead of a raw key dump."""
    state = load_file(str(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        detail = ((f"missing {missing[:3]}" if missing else "")
                  + (f" unexpected {unexpected[:3]}" if unexpected else "")
                  + (f" shape mismatch at {shapes[:3]}" if shapes else ""))
        raise CheckpointError(f"{what} {path} do not fit this model ({type(model).__name__}): {detail.strip()}")
    model.load_state_dict(state)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{name}"] = value
            else:
                scalars[f"{pid}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: str | os.PathLike, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `epoch` atomically and point latest.json at it; keep the newest `keep` checkpoints."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch:04d}.", dir=ckpt_root))
    try:
        save_weights(tmp / "model.safetensors", model.state_dict())
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_weights(tmp / "optimizer.safetensors", {**{f"opt/{k}": v for k, v in opt_tensors.items()},
                                                     **{f"rng/{k}": v for k, v in rng.items()}})
        state = {"epoch": epoch, "optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler else None,
                 **extra}
        (tmp / "state.json").write_text(json.dumps(state, default=_json_default))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(ckpt_root / LATEST, {"epoch": epoch, "dir": final.name})
    for old in sorted(ckpt_root.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The folder latest.json points at, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / json.loads(pointer.read_text())["dir"]
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"{pointer} points at {folder}, which is incomplete")
    return folder


def load_checkpoint(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG state from a checkpoint folder; return its state.json."""
    folder = Path(folder)
    load_weights_into(model, folder / "model.safetensors", "checkpoint weights")
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    opt = {k[len("opt/"):]: v for k, v in tensors.items() if k.startswith("opt/")}
    optimizer.load_state_dict(_unflatten_optimizer(opt, state["optimizer"]))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return state


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON state")
