"""The embeddings of the latest camera observations, each computed once however many queries ask about it.

The node keys an observation by the model version and, for every view the model reads, the frame's stamp (its
arrival time when unstamped) (`observation_key`): a new frame on any view, or a model swap, is a new key and so
a new embedding. Computing a missing embedding is the only locked step (a once-guard: one caller runs the model, the
others asking for the same key wait for it and reuse it); answering from a cached embedding never waits (`lookup`
finds it without computing: the node's executor thread looks up, a model worker computes what is missing). While
an embedding is being computed, callers that accept an older observation (`fallback`) get the newest cached one
instead of waiting, so a query never queues behind the model when a fresh enough answer is already at hand; with
`prefer_fallback` they take it even when nothing is being computed (the node's eager mode: a prefetch computes
new observations, queries never do while an accepted one is cached).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

log = logging.getLogger(__name__)
DEFAULT_SIZE = 2  # the latest observation and the one before it (answered while the latest is being embedded)


@dataclass(frozen=True)
class CacheEntry:
    """One embedded observation: its key, the embedding and what the caller stored with it (e.g. frames)."""

    key: Hashable
    value: Any
    meta: Any = None


def observation_key(model_version: str, frames: Sequence[tuple[str, int, int]]) -> tuple:
    """The cache key of an observation from (view, stamp in ns, arrival in ns) of every view the model reads:
    the model version and each view's stamp, or its arrival time when unstamped (stamp 0), so unstamped frames
    are never mistaken for each other and a frame re-sent with its stamp is the same observation."""
    return (str(model_version), tuple((str(v), "stamp" if stamp else "arrival", int(stamp or arrival))
                                      for v, stamp, arrival in frames))


class EmbeddingCache:
    """The `size` most recently computed embeddings by key; `get` computes a missing one once (thread-safe)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._size = size
        self._entries: tuple[CacheEntry, ...] = ()  # newest first; replaced whole, read without a lock
        self._compute_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {"computed": 0, "hits": 0, "fallbacks": 0, "failed": 0}

    def get(self, key: Hashable, compute: Callable[[], Any], meta: Any = None,
            fallback: Callable[[CacheEntry], bool] | None = None,
            prefer_fallback: bool = False) -> tuple[CacheEntry, bool]:
        """(entry of `key`, whether this call computed it): `lookup`'s entry, else `compute()` runs under the
        once-guard and its value is stored with `meta`. An exception from `compute` propagates, stores nothing."""
        entry = self.lookup(key, fallback, prefer_fallback)
        if entry is not None:
            return entry, False
        with self._compute_lock:
            entry = self._find(key)  # computed by the caller this one waited for
            if entry is not None:
                self._count("hits")
                return entry, False
            try:
                value = compute()
            except BaseException:
                self._count("failed")
                raise
            entry = CacheEntry(key, value, meta)
            self._entries = (entry, *(e for e in self._entries if e.key != key))[:self._size]
            self._count("computed")
            return entry, True

    def lookup(self, key: Hashable, fallback: Callable[[CacheEntry], bool] | None = None,
               prefer_fallback: bool = False) -> CacheEntry | None:
        """The entry to answer `key` from without computing: `key`'s own when cached; else, when another caller is
        computing (or always, with `prefer_fallback`), the newest entry `fallback` accepts (not `key`'s: check
        `entry.key`); else None (`get` would compute)."""
        entry = self._find(key)
        if entry is not None:
            self._count("hits")
            return entry
        if fallback is not None and (prefer_fallback or self._compute_lock.locked()):
            for older in self._entries:
                if fallback(older):
                    self._count("fallbacks")
                    return older
        return None

    def peek(self, key: Hashable) -> CacheEntry | None:
        """The entry of `key` if cached (counts nothing)."""
        return self._find(key)

    def busy(self) -> bool:
        """Whether an embedding is being computed now."""
        return self._compute_lock.locked()

    def clear(self) -> None:
        """Forget every entry (the model was unloaded); the counts stay."""
        self._entries = ()

    def stats(self) -> dict[str, int]:
        """{"computed", "hits", "fallbacks", "failed"} since creation."""
        with self._stats_lock:
            return dict(self._stats)

    def __len__(self) -> int:
        return len(self._entries)

    def _find(self, key: Hashable) -> CacheEntry | None:
        for entry in self._entries:
            if entry.key == key:
                return entry
        return None

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self._stats[what] += 1


class Prefetcher:
    """A background thread that runs `work()` after `wake()`, at most `rate()` times a second (rate <= 0: never)
    and busy at most `busy_share()` of one core (after a run that took t s of the thread's CPU time it starts the
    next one t / share s after it started: a slow CPU runs it less often, a contended one does not, for the time
    it waited for a core is not counted: measured on the shipped model with 8 queries in flight, the wall time made
    the judged frame twice as old). It runs at the normal priority: niced, it starved under load (docs/benchmarks.md).
    Wakes while it works or waits coalesce into one more run. `work` handles its own errors; any that escape
    are logged and the thread goes on."""

    def __init__(self, work: Callable[[], None], rate: Callable[[], float],
                 busy_share: Callable[[], float] = lambda: 1.0, name: str = "vlkd-prefetch") -> None:
        self._work, self._rate, self._busy_share, self._name = work, rate, busy_share, name
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        """Start the thread (again after `stop`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for one more run (cheap: call it from a subscription callback)."""
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread after the run in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        last = took = 0.0
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                break
            rate = self._rate()
            if rate <= 0:
                self._wake.clear()
                continue
            delay = last + max(1.0 / rate, took / max(self._busy_share(), 1e-3)) - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self._wake.clear()  # wakes from here on ask for the run after this one
            last, cpu = time.monotonic(), time.thread_time()
            try:
                self._work()
            except Exception:  # noqa: BLE001 - a bad frame must not stop prefetching
                log.exception("%s: the prefetch failed", self._name)
            took = time.thread_time() - cpu
            self.runs += 1
