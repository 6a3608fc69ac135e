"""vlkd_ros.ros.frame_cache: one embedding per observation key however many callers ask, new keys (frames, model
versions) computed anew, older entries answering while the latest is computed, failures stored nowhere."""
import threading
import time

import pytest

from vlkd_ros.ros.frame_cache import EmbeddingCache, Prefetcher, observation_key


def test_many_concurrent_callers_compute_one_embedding() -> None:
    """16 threads asking for the same key at once: compute runs once, every caller gets its value."""
    cache, calls, gate = EmbeddingCache(), [], threading.Event()

    def compute():
        gate.wait(5.0)
        calls.append(1)
        return "embedding-1"

    got, computed = [], []

    def ask():
        entry, did = cache.get("k1", compute)
        got.append(entry.value)
        computed.append(did)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10.0)
    assert calls == [1] and got == ["embedding-1"] * 16 and computed.count(True) == 1
    assert cache.stats() == {"computed": 1, "hits": 15, "fallbacks": 0, "failed": 0}


def test_a_new_frame_or_model_version_is_a_new_key() -> None:
    """The key names the model version and every view's stamp; any change computes anew, the same does not."""
    cache, n = EmbeddingCache(size=2), iter(range(100))
    first = observation_key("v0-aaaa", [("base_rgb", 100, 5), ("base_depth", 101, 6)])
    assert observation_key("v0-aaaa", [("base_rgb", 100, 9), ("base_depth", 101, 7)]) == first  # re-sent frames
    new_frame = observation_key("v0-aaaa", [("base_rgb", 100, 5), ("base_depth", 102, 8)])  # one view changed
    swapped = observation_key("v1-bbbb", [("base_rgb", 100, 5), ("base_depth", 101, 6)])  # weights swapped
    assert len({first, new_frame, swapped}) == 3
    unstamped = [observation_key("v0-aaaa", [("base_rgb", 0, arrival)]) for arrival in (10, 11)]
    assert unstamped[0] != unstamped[1]  # unstamped frames differ by arrival

    compute = lambda: next(n)  # noqa: E731
    assert cache.get(first, compute)[0].value == 0
    assert cache.get(first, compute)[0].value == 0
    assert cache.get(new_frame, compute)[0].value == 1
    assert cache.get(first, compute)[0].value == 0  # the one before is kept (size 2)
    assert cache.get(swapped, compute)[0].value == 2
    assert cache.peek(first) is None and len(cache) == 2  # the first computed was dropped
    assert cache.stats()["computed"] == 3
    cache.clear()
    assert cache.peek(swapped) is None and len(cache) == 0 and cache.stats()["computed"] == 3


def test_while_one_caller_computes_others_may_take_an_older_entry() -> None:
    """A caller with `fallback` gets the newest accepted older entry instead of waiting; without, it waits."""
    cache = EmbeddingCache()
    cache.get("old", lambda: "old embedding", meta={"stamp": 1})
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5.0)
        return "new embedding"

    worker = threading.Thread(target=lambda: cache.get("new", slow, meta={"stamp": 2}))
    worker.start()
    assert started.wait(5.0) and cache.busy()
    entry, computed = cache.get("new", lambda: pytest.fail("computed twice"), fallback=lambda e: True)
    assert (entry.key, entry.value, entry.meta, computed) == ("old", "old embedding", {"stamp": 1}, False)
    refused = []
    waiter = threading.Thread(target=lambda: refused.append(cache.get("new", lambda: "x", fallback=lambda e: False)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # no acceptable older entry: it waits for the computation
    release.set()
    worker.join(5.0)
    waiter.join(5.0)
    assert refused[0][0].value == "new embedding" and not refused[0][1]
    assert cache.stats() == {"computed": 2, "hits": 1, "fallbacks": 1, "failed": 0}


def test_a_failed_computation_stores_nothing() -> None:
    """compute's exception reaches the caller; the next caller computes again."""
    cache = EmbeddingCache()

    def broken():
        raise ValueError("image 0: bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        cache.get("k", broken)
    assert cache.peek("k") is None and not cache.busy()
    assert cache.get("k", lambda: "ok")[0].value == "ok"
    assert cache.stats()["failed"] == 1 and cache.stats()["computed"] == 1
    with pytest.raises(ValueError, match="size must be >= 1"):
        EmbeddingCache(size=0)


def test_prefer_fallback_takes_an_accepted_older_entry_without_computing() -> None:
    """The node's eager mode: queries never compute while an accepted entry is cached; with none, they do."""
    cache = EmbeddingCache()
    cache.get("old", lambda: "old embedding")
    entry, computed = cache.get("new", lambda: pytest.fail("computed"), fallback=lambda e: True, prefer_fallback=True)
    assert (entry.key, computed) == ("old", False)
    entry, computed = cache.get("new", lambda: "new embedding", fallback=lambda e: False, prefer_fallback=True)
    assert (entry.value, computed) == ("new embedding", True)


def test_the_prefetcher_runs_after_wakes_at_a_bounded_rate() -> None:
    """Each wake asks for a run, never sooner than 1/rate after the last; rate 0 runs nothing; an error does not
    stop it; after stop nothing runs."""
    runs, rate = [], {"hz": 20.0}

    def work():
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("a bad frame")

    def wait_runs(n: int) -> bool:
        end = time.monotonic() + 30.0
        while len(runs) < n and time.monotonic() < end:
            time.sleep(0.01)
        return len(runs) >= n

    prefetcher = Prefetcher(work, lambda: rate["hz"])
    prefetcher.start()
    try:
        for n in range(1, 4):  # the first run raises; the thread goes on
            prefetcher.wake()
            assert wait_runs(n), runs
        assert all(b - a >= 1 / 20.0 - 1e-3 for a, b in zip(runs, runs[1:])), runs  # at most 20 Hz
        rate["hz"] = 0.0
        prefetcher.wake()
        time.sleep(0.2)
        assert len(runs) == 3
    finally:
        prefetcher.stop()
    rate["hz"] = 20.0
    prefetcher.wake()
    time.sleep(0.2)
    assert len(runs) == 3  # stopped


def test_prefetch_busy_share_spaces_runs_by_the_cpu_time_they_take():
    """After a run that took t s of CPU the next starts no sooner than t / busy_share after it began (busy at most
    that share of a core, whatever the rate allows); time a run spends off the CPU (waiting for a core, here
    sleeping) does not space them, and at share 1 only the rate does."""
    runs, share, mode = [], {"value": 0.2}, {"spin": True}

    def work():
        runs.append(time.monotonic())
        if mode["spin"]:  # 0.1 s of this thread's CPU time
            end = time.thread_time() + 0.1
            while time.thread_time() < end:
                pass
        else:
            time.sleep(0.1)

    def gaps_of(n: int) -> list[float]:
        start = len(runs)
        end = time.monotonic() + 30.0
        while len(runs) < start + n and time.monotonic() < end:
            prefetcher.wake()  # a new frame asks for a run, again and again
            time.sleep(0.01)
        mine = runs[start:start + n]
        assert len(mine) == n, runs
        return [b - a for a, b in zip(mine, mine[1:])]

    prefetcher = Prefetcher(work, lambda: 1000.0, lambda: share["value"])
    prefetcher.start()
    try:
        assert all(gap >= 0.1 / 0.2 - 1e-3 for gap in gaps_of(3))  # each run 0.1 s of CPU: >= 0.5 s apart
        mode["spin"] = False
        gaps_of(1)  # the run waiting on the spinning run's spacing
        assert all(gap < 0.4 for gap in gaps_of(3))  # 0.1 s asleep, next to no CPU: about the run's own 0.1 s
        share["value"], mode["spin"] = 1.0, True
        gaps_of(1)
        assert all(gap < 0.45 for gap in gaps_of(3))  # back to back: about the run's own 0.1 s
    finally:
        prefetcher.stop()
