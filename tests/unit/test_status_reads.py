"""The fast status read path: the status cache, the key cache and coalesced reads (the freshness
promise is checked end to end in tests/e2e/test_status_reads.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import OperationalError

from app.reads.key_cache import KeyCache
from app.reads.loader import TaskLoader, TaskStatus
from app.reads.status_cache import CachedStatus, StatusCache

# --- the status cache


def enabled_cache(max_entries: int = 3) -> StatusCache:
    cache = StatusCache(max_entries)
    cache.enable(True)
    return cache


def test_cache_keeps_the_most_recently_used_entries_up_to_its_bound() -> None:
    cache = enabled_cache(max_entries=2)
    for task_id in ("a", "b"):
        cache.put(task_id, CachedStatus(1, False, task_id.encode()), cache.epoch)
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", CachedStatus(1, False, b"c"), cache.epoch)
    assert len(cache) == 2 and cache.get("b") is None
    assert cache.get("a") == CachedStatus(1, False, b"a") and cache.get("c") == CachedStatus(1, False, b"c")


def test_a_read_that_began_before_an_invalidation_is_not_stored() -> None:
    cache = enabled_cache()
    read_began = cache.epoch
    cache.invalidate("other-task")  # any change, committed while the read was in flight
    cache.put("a", CachedStatus(1, False, b"old"), read_began)
    assert cache.get("a") is None
    cache.put("a", CachedStatus(1, False, b"new"), cache.epoch)
    assert cache.get("a") == CachedStatus(1, False, b"new")


def test_invalidation_drops_the_entry_and_a_disabled_cache_serves_nothing() -> None:
    cache = enabled_cache()
    cache.put("a", CachedStatus(1, False, b"a"), cache.epoch)
    cache.invalidate("a")
    assert cache.get("a") is None
    cache.put("a", CachedStatus(1, False, b"a"), cache.epoch)
    cache.enable(False)  # changes elsewhere can no longer be heard
    assert cache.get("a") is None
    cache.put("a", CachedStatus(1, False, b"a"), cache.epoch)
    assert cache.get("a") is None  # kept only as the last status known, for when the database is out


def test_a_zero_size_cache_stores_nothing() -> None:
    cache = enabled_cache(max_entries=0)
    cache.put("a", CachedStatus(1, False, b"a"), cache.epoch)
    assert len(cache) == 0


# --- the key cache


def test_key_cache_forgets_owners_after_its_ttl_and_beyond_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    keys = KeyCache(ttl_s=10, max_keys=2)
    keys.put("h1", 1)
    now[0] += 9.9
    assert keys.get("h1") == 1
    now[0] += 0.1
    assert keys.get("h1") is None  # a revoked key stops working within the TTL
    keys.put("h1", 1), keys.put("h2", 2), keys.put("h3", 3)
    assert keys.get("h1") is None and keys.get("h2") == 2 and keys.get("h3") == 3


# --- coalesced reads


class CountingFetch:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def __call__(self, task_ids: list[str]) -> list[TaskStatus]:
        self.batches.append(task_ids)
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("database down")
        return [fake_status(task_id) for task_id in task_ids if task_id != "missing"]

    async def close(self) -> None:
        return None


def fake_status(task_id: str) -> TaskStatus:
    now = datetime.now(UTC)
    return TaskStatus(task_id, 1, "success", "nano-banana-pro", "task_up", [], [], None, None, None, now, now, now)


async def test_concurrent_reads_share_queries_and_each_gets_its_own_task() -> None:
    fetch = CountingFetch()
    loader = TaskLoader(fetch)
    ids = [f"t{i}" for i in range(50)] + ["t1", "missing"]
    rows = await asyncio.gather(*(loader.load(task_id) for task_id in ids))
    assert [row.id if row else None for row in rows] == [*ids[:-1], None]
    # One query for every read that arrived before it started; each id asked once.
    assert [sorted(batch) for batch in fetch.batches] == [sorted({*ids})]


async def test_a_read_never_joins_a_query_that_started_before_it() -> None:
    fetch = CountingFetch()
    loader = TaskLoader(fetch)
    first = asyncio.create_task(loader.load("a"))
    await asyncio.sleep(0.001)  # the query for "a" is now in flight
    await asyncio.gather(first, loader.load("a"))
    assert fetch.batches == [["a"], ["a"]]


async def test_a_failed_query_fails_its_reads_and_the_next_reads_start_afresh() -> None:
    fetch = CountingFetch(fail=True)
    loader = TaskLoader(fetch)
    results = await asyncio.gather(loader.load("a"), loader.load("b"), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    fetch.fail = False
    row = await loader.load("a")
    assert row is not None and row.id == "a"


class PoisonedFetch(CountingFetch):
    """A query that one id breaks, as a value the database refuses would."""

    async def __call__(self, task_ids: list[str]) -> list[TaskStatus]:
        if "poison" in task_ids:
            self.batches.append(task_ids)
            raise ValueError("invalid input value")
        return await super().__call__(task_ids)


async def test_a_read_that_breaks_the_shared_query_fails_alone() -> None:
    fetch = PoisonedFetch()
    loader = TaskLoader(fetch)
    ids = [f"t{i}" for i in range(20)]
    results = await asyncio.gather(*(loader.load(task_id) for task_id in [*ids, "poison"]), return_exceptions=True)
    assert [row.id for row in results[:-1]] == ids  # type: ignore[union-attr]
    assert isinstance(results[-1], ValueError)


async def test_when_the_database_is_unreachable_a_batch_fails_at_once_without_retrying_each_read() -> None:
    class Unreachable(CountingFetch):
        async def __call__(self, task_ids: list[str]) -> list[TaskStatus]:
            self.batches.append(task_ids)
            raise OperationalError("SELECT", {}, ConnectionRefusedError())

    fetch = Unreachable()
    loader = TaskLoader(fetch)
    results = await asyncio.gather(*(loader.load(f"t{i}") for i in range(20)), return_exceptions=True)
    assert all(isinstance(result, OperationalError) for result in results)
    assert len(fetch.batches) == 1


async def test_a_reader_that_goes_away_does_not_break_the_others() -> None:
    loader = TaskLoader(CountingFetch())
    gone = asyncio.create_task(loader.load("a"))
    staying = asyncio.create_task(loader.load("b"))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await staying).id == "b"  # type: ignore[union-attr]
