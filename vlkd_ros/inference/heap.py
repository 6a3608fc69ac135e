"""Handing freed memory back to the system: glibc's allocator keeps what a process freed (a few-shot job's
temporaries, a dropped model) for reuse, and its `malloc_trim` returns the free pages; elsewhere nothing happens."""
from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None


def trim_heap() -> None:
    """Return the memory the process has freed to the system, where the C library can (glibc: malloc_trim(0))."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
