"""Key administration on the run's real database: list, show, rename, expire, revoke, and `last used`
written once per round for all keys used, never once per request."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from app import key_admin
from app.db.tables import ApiKey, Task
from app.deps import Deps, open_deps
from app.errors import NotFound, Unauthorized
from app.keys import authenticate, create_key, hash_key, keep_key_use, record_key_use, set_limits
from app.reads.key_cache import KeyCache
from tests.support.clock import SteppedClock
from tests.support.gateways import gateway_settings


@contextlib.asynccontextmanager
async def replica(database_url: str, clock: SteppedClock | None = None, ttl_s: float = 10.0) -> AsyncIterator[Deps]:
    """One process's view of the database, with its own key cache."""
    async with open_deps(gateway_settings(database_url, "http://127.0.0.1:9"), clock=clock or SteppedClock()) as deps:
        deps.keys = KeyCache(ttl_s=ttl_s)
        yield deps


async def add_task(sessions: Any, key_id: int, task_id: str, state: str, credits: float | None, reserve: float) -> None:
    now = datetime.now(UTC)
    task = Task(id=task_id, api_key_id=key_id, provider="kie", model="nano-banana-pro", request={}, state=state)
    task.image_urls, task.stored_images, task.created_at, task.updated_at = [], [], now, now
    task.credits, task.credit_reserve = credits, reserve
    async with sessions.begin() as session:
        session.add(task)


async def test_list_shows_every_key_and_never_the_key_itself(database_url: str) -> None:
    async with replica(database_url) as deps:
        alice, bob = await create_key(deps, "alice"), await create_key(deps, "bob")
        await set_limits(deps, alice.id, rate_per_minute=5, daily_credit_budget=100)
        await key_admin.revoke_key(deps, bob.id)
        listed = await key_admin.list_keys(deps)
        as_json = json.dumps([key.as_json(deps.clock()) for key in listed])
    assert [(key.id, key.name, key.status(deps.clock())) for key in listed] == [
        (alice.id, "alice", "active"),
        (bob.id, "bob", "revoked"),
    ]
    assert listed[0].limits == {
        "rate_per_minute": 5,
        "max_in_flight": None,
        "daily_credit_budget": 100.0,
        "monthly_credit_budget": None,
    }
    assert listed[0].prefix == alice.key[:10]
    for secret in (alice.key, bob.key, alice.webhook_secret, bob.webhook_secret):
        assert secret not in as_json


async def test_show_counts_usage_this_day_and_month_and_tasks_in_flight(database_url: str, sessions: Any) -> None:
    async with replica(database_url) as deps:
        key = await create_key(deps, "alice")
        other = await create_key(deps, "other")
        await add_task(sessions, key.id, "ih_done", "success", credits=18.0, reserve=20.0)
        await add_task(sessions, key.id, "ih_running", "processing", credits=None, reserve=20.0)
        await add_task(sessions, other.id, "ih_not_hers", "processing", credits=None, reserve=99.0)
        shown = await key_admin.key_details(deps, key.id)
        with pytest.raises(NotFound, match="No API key #999"):
            await key_admin.key_details(deps, 999)
    assert shown["name"] == "alice" and shown["status"] == "active"
    # Finished tasks count what they cost, unfinished ones what they reserve, as the budgets do.
    assert shown["usage"] == {"in_flight": 1, "credits_today": 38.0, "credits_this_month": 38.0}


async def test_rename_changes_only_the_name(database_url: str) -> None:
    async with replica(database_url) as deps:
        key = await create_key(deps, "alice")
        renamed = await key_admin.rename_key(deps, key.id, "alice-production")
        assert await authenticate(deps, key.key) == key.id
    assert renamed.name == "alice-production" and renamed.status(deps.clock()) == "active"


async def test_a_revoked_key_is_refused_by_every_replica_within_the_cache_ttl(database_url: str) -> None:
    async with replica(database_url, ttl_s=0.3) as one, replica(database_url, ttl_s=0.3) as two:
        key = await create_key(one, "alice")
        assert await authenticate(one, key.key) == key.id
        assert await authenticate(two, key.key) == key.id
        first = await key_admin.revoke_key(one, key.id)
        again = await key_admin.revoke_key(one, key.id)
        await asyncio.sleep(0.35)
        for deps in (one, two):
            with pytest.raises(Unauthorized):
                await authenticate(deps, key.key)
    assert again.revoked_at == first.revoked_at  # revoking twice keeps the first time


async def test_an_expired_key_is_refused_even_while_cached(database_url: str) -> None:
    async with replica(database_url) as deps:
        key = await create_key(deps, "alice")
        await key_admin.set_expiry(deps, key.id, timedelta(seconds=1))
        assert await authenticate(deps, key.key) == key.id  # cached now, for the 10 s TTL
        await asyncio.sleep(1.1)
        with pytest.raises(Unauthorized):
            await authenticate(deps, key.key)
        assert deps.keys.last_known(hash_key(key.key)) is None  # nor while the database is out
        (summary,) = await key_admin.list_keys(deps)
        assert summary.status(deps.clock()) == "expired"
        # `never` takes the expiry away again.
        await key_admin.set_expiry(deps, key.id, None)
        assert await authenticate(deps, key.key) == key.id


async def test_an_expiry_passing_by_the_clock_refuses_the_key(database_url: str) -> None:
    clock = SteppedClock()
    async with replica(database_url, clock) as deps:
        key = await create_key(deps, "alice")
        await key_admin.set_expiry(deps, key.id, timedelta(days=30))
    clock.advance(timedelta(days=30, seconds=1))
    async with replica(database_url, clock) as deps:
        with pytest.raises(Unauthorized):
            await authenticate(deps, key.key)


async def test_last_used_is_one_statement_for_all_keys_used(database_url: str, sessions: Any) -> None:
    async with replica(database_url) as deps:
        keys = [await create_key(deps, f"client {n}") for n in range(3)]
        for _ in range(50):
            for key in keys[:2]:
                await authenticate(deps, key.key)
        statements: list[str] = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731 (conn, cursor, statement, ...)
        event.listen(deps.engine.sync_engine, "before_cursor_execute", listener)
        try:
            await record_key_use(deps)
            await record_key_use(deps)  # nothing used since: nothing written
        finally:
            event.remove(deps.engine.sync_engine, "before_cursor_execute", listener)
        listed = {key.id: key for key in await key_admin.list_keys(deps)}
    writes = [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 1 and ApiKey.__tablename__ in writes[0]
    assert listed[keys[0].id].last_used_at is not None and listed[keys[1].id].last_used_at is not None
    assert listed[keys[2].id].last_used_at is None


async def test_unknown_keys_are_named_in_the_refusal(database_url: str) -> None:
    async with replica(database_url) as deps:
        for change in (
            key_admin.rename_key(deps, 404, "x"),
            key_admin.revoke_key(deps, 404),
            key_admin.set_expiry(deps, 404, None),
        ):
            with pytest.raises(NotFound, match="No API key #404"):
                await change


async def test_a_process_on_its_way_out_writes_down_the_keys_it_saw(database_url: str) -> None:
    async with replica(database_url) as deps:
        key = await create_key(deps, "alice")
        await authenticate(deps, key.key)
        stopping = asyncio.Event()
        stopping.set()
        await asyncio.wait_for(keep_key_use(deps, stopping), timeout=5)
        (summary,) = await key_admin.list_keys(deps)
    assert summary.last_used_at is not None
