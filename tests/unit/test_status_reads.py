"""The fast status read path: the status cache, the key cache, coalesced reads, and the
freshness promise: a read that starts after a callback was answered never shows the older
state, and a change made anywhere else shows within 1 s."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from app.db.tables import Task
from app.reads.key_cache import KeyCache
from app.reads.loader import EngineFetch, SqliteFetch, TaskLoader, TaskStatus, open_loader
from app.reads.status_cache import CachedStatus, StatusCache
from tests.conftest import Emulator, StartGateway, market_callback, post_signed, wait_until
from tests.e2e.test_e2e_faults import slow_task

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
    return TaskStatus(task_id, 1, "success", "nano-banana-pro", [], [], None, None, now, now, now)


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


async def test_the_sqlite_reader_decodes_rows_as_the_orm_does(engine, sessions, make_client_key, on_postgres) -> None:
    if on_postgres:
        pytest.skip("SqliteFetch reads SQLite files; on PostgreSQL the engine itself is used")
    owner = (await make_client_key("reader")).id
    now = datetime.now(UTC).replace(microsecond=123456)
    common = {"api_key_id": owner, "provider": "kie", "model": "nano-banana-pro", "request": {"prompt": "x"}}
    times = {"created_at": now - timedelta(seconds=5), "updated_at": now}
    async with sessions.begin() as session:
        session.add_all(
            [
                Task(
                    id="done",
                    state="success",
                    image_urls=["https://x/a.png", "https://x/b.png"],
                    stored_images=[1],
                    completed_at=now,
                    **common,
                    **times,
                ),
                Task(id="waiting", state="processing", **common, **times),
                Task(
                    id="failed",
                    state="fail",
                    fail_msg="Content policy violation",
                    cost_time_ms=1500,
                    completed_at=now,
                    **common,
                    **times,
                ),
            ]
        )
    assert isinstance(open_loader(engine).fetch, SqliteFetch)
    direct, through_engine = SqliteFetch(engine.url.database), EngineFetch(engine)
    try:
        ids = ["done", "waiting", "failed", "absent"]
        assert sorted(await direct(ids)) == sorted(await through_engine(ids))
    finally:
        await direct.close()
        await through_engine.close()


# --- freshness, end to end


async def read_status(client: httpx.AsyncClient, task_id: str) -> dict:
    response = await client.get("/api/images/status", params={"taskId": task_id})
    assert response.status_code == 200
    return response.json()


async def test_a_read_after_the_callback_was_answered_never_shows_the_older_state(
    client: httpx.AsyncClient, kie: Emulator
) -> None:
    task_id, upstream = await slow_task(client, kie)
    assert (await read_status(client, task_id))["state"] == "pending"  # now cached
    stop = asyncio.Event()

    async def keep_reading() -> None:  # reads racing the callback keep refilling the cache
        # A client of its own: concurrent requests sharing one httpx pool can wait on each other's
        # connection indefinitely (encode/httpcore#822), which is not what this test is about.
        async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers, timeout=10) as own:
            while not stop.is_set():
                await read_status(own, task_id)

    readers = [asyncio.create_task(keep_reading()) for _ in range(4)]
    await asyncio.sleep(0.1)
    body = market_callback(upstream["taskId"], state="success")
    assert (await post_signed(upstream["callBackUrl"], body)).status_code == 200
    after = await read_status(client, task_id)
    stop.set()
    await asyncio.gather(*readers)
    assert after["state"] == "success" and after["imageUrl"]


async def test_a_change_made_outside_the_gateway_shows_within_a_second(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    """Another process or replica (a separate sweeper, an operator) changes the row directly."""
    task_id, _ = await slow_task(client, kie)
    for _ in range(3):
        assert (await read_status(client, task_id))["state"] == "pending"
    async with sessions.begin() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(state="processing"))
    changed_at = time.monotonic()
    status = await wait_until(lambda: read_status(client, task_id), lambda s: s["state"] == "processing", timeout=3)
    assert status["state"] == "processing" and time.monotonic() - changed_at < 1.0


async def test_a_callback_on_one_replica_shows_on_another_within_a_second(
    start_gateway: StartGateway, kie: Emulator, make_key
) -> None:
    first, second = await start_gateway(), await start_gateway()
    key = await make_key("two-replicas")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=first.url, headers=headers) as on_first:
        async with httpx.AsyncClient(base_url=second.url, headers=headers) as on_second:
            task_id, upstream = await slow_task(on_first, kie)
            for _ in range(3):
                assert (await read_status(on_second, task_id))["state"] == "pending"
            body = market_callback(upstream["taskId"], state="success")
            assert (await post_signed(upstream["callBackUrl"], body)).status_code == 200
            answered_at = time.monotonic()
            status = await wait_until(
                lambda: read_status(on_second, task_id), lambda s: s["state"] == "success", timeout=3
            )
    assert status["state"] == "success" and time.monotonic() - answered_at < 1.0


async def test_another_clients_task_is_not_found_even_when_cached(client: httpx.AsyncClient, kie, client_of, gateway):
    task_id, _ = await slow_task(client, kie)
    await read_status(client, task_id)
    async with client_of(gateway) as other:
        response = await other.get("/api/images/status", params={"taskId": task_id})
    assert response.status_code == 404 and response.json() == {"error": "Task not found"}
