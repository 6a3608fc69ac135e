"""What every request to the node shares: `QueryError` (a request that cannot be served, its text the reply's
message) and object names as the registry spells them."""
from __future__ import annotations

from functools import lru_cache

from vlkd_formats.object_registry import normalize_name


class QueryError(Exception):
    """A request that cannot be served; its text becomes the reply's message."""


def registry_name(name: str) -> str:
    """`name` as the object registry spells it, or QueryError when the registry refuses it."""
    try:
        return _normalized(name)
    except ValueError as err:
        raise QueryError(str(err)) from err


_normalized = lru_cache(maxsize=4096)(normalize_name)  # queries name the same few objects over and over
