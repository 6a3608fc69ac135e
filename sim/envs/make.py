"""Create a ManiSkill env for a collector: backend arguments, Vulkan failure explained, GC kept cheap."""
from __future__ import annotations

import gc
from typing import Any

import gymnasium as gym

from sim.backend import explain_render_failure, maniskill_backend_kwargs


def make_env(env_id: str, sim_backend: str, num_envs: int = 1, **kwargs: Any) -> gym.Env:
    """`gym.make(env_id)` on the chosen backend (one scene on `cpu`, `num_envs` parallel scenes on `gpu`).

    Afterwards the objects alive in this process are frozen out of the garbage collector: ManiSkill runs a full
    `gc.collect()` at every scene rebuild, which otherwise costs ~0.4 s per image with torch loaded.
    """
    backend = maniskill_backend_kwargs(sim_backend)
    try:
        env = gym.make(env_id, num_envs=num_envs if sim_backend == "gpu" else 1, **backend, **kwargs)
    except RuntimeError as err:
        explained = explain_render_failure(err)
        if explained is not None:
            raise explained from err
        raise
    gc.freeze()
    return env
