"""Errors sim/ raises for problems of the machine or the disk (bad user input raises ValueError/FileNotFoundError)."""
from __future__ import annotations

from vlkd_formats.errors import StorageError, VlkdError


class SimError(VlkdError, RuntimeError):
    """Base class: a collection could not run or finish; the message says what to do."""


class SimUnavailableError(SimError):
    """The machine cannot run the requested simulation/rendering (no Vulkan device, no CUDA, missing assets)."""


class CollectionError(SimError, StorageError):
    """A collection stopped part-way (a worker failed, the disk is full); finished samples stay resumable."""
