"""The one error type of every vlkd library: the CLI turns any `VlkdError` into a one-line message and exit 2."""
from __future__ import annotations


class VlkdError(Exception):
    """Base class of every error a vlkd library raises on purpose; its message says what was wrong and what to do."""


class StorageError(VlkdError, OSError):
    """A file could not be written (disk full, no permission); the message says how to recover."""
