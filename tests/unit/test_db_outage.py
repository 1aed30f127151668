"""Telling outages from failed statements, the breaker, and what reads answer while the database
is out: a real engine and Deps pointed at a port nobody listens on (no PostgreSQL needed)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from starlette.requests import Request

from app.db import outage
from app.db.engine import create_engine
from app.db.outage import Breaker, is_outage
from app.deps import Deps, open_deps
from app.errors import DatabaseUnavailable, NotFound, Unauthorized
from app.keys import authenticate, hash_key
from app.main import database_error
from app.reads.key_cache import KeyCache
from app.reads.status_cache import CachedStatus, StatusCache
from app.settings import Settings
from app.tasks.status import read_status, wait_for_status
from tests.support.servers import free_port

TIMEOUT_S = 1.0


def nobody_listening() -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/imagehook"


# --- what counts as an outage


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        sqlite3.OperationalError("database is locked"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_unreachable_or_slow_databases_are_outages(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: tasks.id")),
        sa_exc.DataError("INSERT", {}, asyncpg.exceptions.StringDataRightTruncationError("value too long")),
        sqlite3.OperationalError("no such table: tasks"),
        asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
        ValueError("not a database error at all"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_statements_the_database_refused_are_not_outages(error: Exception) -> None:
    assert not is_outage(error)


async def test_an_outage_that_reaches_the_handlers_raw_is_a_503_and_any_other_database_error_a_500() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/api/images/status", "headers": []})
    # What the status reader's own SQLite connection raises (it does not go through the engine).
    locked = await database_error(request, sqlite3.OperationalError("database is locked"))
    broken = await database_error(request, sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL")))
    assert locked.status_code == 503 and json.loads(locked.body) == {"error": "Database unavailable; retry shortly"}
    assert locked.headers["retry-after"]
    assert broken.status_code == 500 and json.loads(broken.body) == {"error": "Internal server error"}


async def test_a_value_the_database_refused_is_the_clients_400_not_a_500() -> None:
    """Values are checked before they reach the database; should one slip through, it is still a 4xx."""
    request = Request({"type": "http", "method": "GET", "path": "/api/images/status", "headers": []})
    refused = sa_exc.DataError("SELECT", {}, Exception('invalid byte sequence for encoding "UTF8": 0x00'))
    answer = await database_error(request, refused)
    assert (answer.status_code, json.loads(answer.body)) == (
        400,
        {"error": "The request holds a value that cannot be stored"},
    )


# --- the breaker


def test_the_breaker_refuses_at_once_then_lets_one_caller_try(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: now[0])
    breaker = Breaker(open_s=1.0)
    with pytest.raises(DatabaseUnavailable) as failed, breaker.attempt():
        raise ConnectionRefusedError(111, "Connect call failed")
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)
    with pytest.raises(DatabaseUnavailable) as refused, breaker.attempt():
        pytest.fail("a refused caller must not reach the database")
    assert refused.value.__cause__ is None
    now[0] += 1.0
    with breaker.attempt():  # the one that tries again...
        with pytest.raises(DatabaseUnavailable), breaker.attempt():
            pytest.fail("...while the others are still refused")
    with breaker.attempt():  # its success closed the breaker
        pass


def test_a_failure_that_is_no_outage_leaves_the_breaker_closed() -> None:
    breaker = Breaker()
    with pytest.raises(ValueError), breaker.attempt():
        raise ValueError("bad statement")
    with breaker.attempt():
        pass


async def test_an_unreachable_database_is_refused_at_once_until_the_breaker_lets_one_try() -> None:
    engine = create_engine(nobody_listening(), TIMEOUT_S)

    async def why_not() -> BaseException | None:
        with pytest.raises(DatabaseUnavailable) as failed:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return failed.value.__cause__

    try:
        assert isinstance(await why_not(), ConnectionRefusedError)
        await engine.dispose()  # a new pool, the same breaker
        assert await why_not() is None  # refused without trying
        await asyncio.sleep(outage.BREAKER_OPEN_S)
        assert isinstance(await why_not(), ConnectionRefusedError)  # tried again
    finally:
        await engine.dispose()


# --- what the caches still answer


def test_a_status_dropped_from_the_cache_is_still_the_last_one_known() -> None:
    cache = StatusCache(max_entries=2)
    cache.enable(True)
    first, second = CachedStatus(1, False, b"first"), CachedStatus(1, True, b"second")
    cache.put("a", first, cache.epoch)
    cache.invalidate("a")
    assert cache.get("a") is None and cache.last_known("a") == first
    cache.put("a", second, cache.epoch)
    cache.enable(False)  # the LISTEN connection is down
    assert cache.get("a") is None and cache.last_known("a") == second
    cache.put("b", first, cache.epoch), cache.put("c", first, cache.epoch)
    assert cache.last_known("a") is None  # the size bound holds for known statuses too


def test_an_expired_key_is_still_known_until_the_database_says_it_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    keys = KeyCache(ttl_s=10)
    keys.put("h1", 7)
    now[0] += 60
    assert keys.get("h1") is None and keys.last_known("h1") == 7
    keys.put("h1", None)  # revoked
    assert keys.last_known("h1") is None


@pytest.fixture
async def deps_without_database() -> AsyncIterator[Deps]:
    settings = Settings(database_url=nobody_listening(), database_timeout_s=TIMEOUT_S, secret="s" * 16)
    async with open_deps(settings) as deps:
        yield deps


async def test_status_reads_answer_the_last_known_status_to_its_owner_only(deps_without_database: Deps) -> None:
    deps = deps_without_database
    known = CachedStatus(owner=1, terminal=False, body=b'{"state":"pending"}')
    deps.status_cache.put("ih_known", known, deps.status_cache.epoch)
    assert await read_status(deps, 1, "ih_known") == known
    with pytest.raises(NotFound):
        await read_status(deps, 2, "ih_known")
    with pytest.raises(DatabaseUnavailable):
        await read_status(deps, 1, "ih_never-read")
    assert await wait_for_status(deps, api_key_id=1, task_id="ih_known", wait_s=0.6) == known


async def test_a_key_found_valid_before_still_works_and_an_unknown_one_is_unavailable(
    deps_without_database: Deps,
) -> None:
    deps = deps_without_database
    deps.keys = KeyCache(ttl_s=0)  # every entry already past its TTL
    deps.keys.put(hash_key("ih_known"), 7)
    assert await authenticate(deps, "ih_known") == 7
    with pytest.raises(DatabaseUnavailable):
        await authenticate(deps, "ih_unknown")
    with pytest.raises(Unauthorized):
        await authenticate(deps, None)
