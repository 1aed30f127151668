"""The callback path's raw-driver writer writes exactly what the ORM would, on both databases,
and leaves the database usable whatever happens to its transaction."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from app.db import queries, raw_writer
from app.db.raw_writer import sqlite_datetime
from app.db.tables import StoredFile, Task, TaskEvent, WebhookDelivery
from app.db.task_writer import SessionWriter
from app.deps import Deps, open_deps
from app.errors import DatabaseUnavailable
from app.tasks import updates
from app.tasks.domain import State, Update
from app.tasks.updates import Outcome
from tests.support.gateways import gateway_settings

NO_PROVIDER = "http://127.0.0.1:9"
NOW = datetime(2026, 12, 2, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
async def deps(database_url: str) -> AsyncIterator[Deps]:
    async with open_deps(gateway_settings(database_url, NO_PROVIDER), clock=lambda: NOW) as deps:
        yield deps


async def add_tasks(sessions, owner: int, *task_ids: str, **columns: Any) -> None:
    then = NOW - timedelta(minutes=3)
    common = {"api_key_id": owner, "provider": "kie", "model": "nano-banana-pro", "request": {"prompt": "x"}}
    common |= {"created_at": then, "updated_at": then, "next_check_at": then}
    async with sessions.begin() as session:
        session.add_all(Task(id=task_id, **common | columns) for task_id in task_ids)


def batch(prefix: str) -> list[tuple[str, Update, str]]:
    """One of each kind of outcome, and a task moved twice in the same batch."""
    done = Update(State.SUCCESS, image_urls=("https://x/1.png", "https://x/2.png"), cost_time_ms=31, credits=18.0)
    return [
        (f"{prefix}progress", Update(State.PROCESSING, upstream_id=f"up-{prefix}progress"), "callback"),
        (f"{prefix}progress", done, "callback"),
        (f"{prefix}fail", Update(State.FAIL, fail_code="500", fail_msg="upstream broke"), "callback"),
        (f"{prefix}hooked", done, "callback"),
        (f"{prefix}hooked", Update(State.FAIL, fail_msg="late"), "callback"),  # conflict: first terminal wins
        (f"{prefix}hooked", done, "callback"),  # duplicate
        (f"{prefix}bound", Update(State.SUCCESS, upstream_id="someone-else"), "callback"),  # mismatch
        (f"{prefix}nobody", done, "callback"),  # unknown task
    ]


async def rows_of(sessions, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every row the batch left, as the ORM reads it, with the prefix and generated ids taken out."""

    def plain(row: Any, skip: tuple[str, ...] = ("id", "webhook_id")) -> dict[str, Any]:
        values = {column.key: getattr(row, column.key) for column in row.__table__.columns if column.key not in skip}
        return json.loads(json.dumps(values, default=str).replace(prefix, ""))

    found = {}
    async with sessions() as session:
        for model in (Task, TaskEvent, StoredFile, WebhookDelivery):
            key = model.id if model is Task else model.task_id
            stmt = select(model).where(key.like(f"{prefix}%")).order_by(key, model.id)
            found[model.__tablename__] = [plain(row) for row in (await session.execute(stmt)).scalars()]
    return found


# On SQLite a table's rows go in as one statement while its parameters fit (app/db/raw_writer.py),
# and as several when they do not: a bound of 8 splits every table's rows into runs of one or two.
@pytest.mark.parametrize("parameters_bound", [raw_writer.SQLITE_MAX_VARIABLES, 8])
async def test_the_raw_writer_leaves_the_very_rows_the_orm_writes(
    deps: Deps, sessions, make_client_key, monkeypatch: pytest.MonkeyPatch, parameters_bound: int
) -> None:
    monkeypatch.setattr(raw_writer, "SQLITE_MAX_VARIABLES", parameters_bound)
    owner = (await make_client_key("raw")).id
    for prefix in ("orm-", "raw-"):
        await add_tasks(sessions, owner, f"{prefix}progress", f"{prefix}fail", state="pending")
        await add_tasks(sessions, owner, f"{prefix}hooked", state="processing", webhook_url="https://hooks.example/h")
        await add_tasks(sessions, owner, f"{prefix}bound", state="processing", upstream_id="up-bound")
    async with deps.write() as session:
        by_orm = await updates.apply_updates(deps, SessionWriter(session), batch("orm-"))
    async with deps.raw_write() as tx:
        by_raw = await updates.apply_updates(deps, tx, batch("raw-"))

    assert by_raw == by_orm
    assert set(by_raw) == set(Outcome)
    orm_rows, raw_rows = await rows_of(sessions, "orm-"), await rows_of(sessions, "raw-")
    assert raw_rows == orm_rows
    assert [task["state"] for task in raw_rows["tasks"]] == ["processing", "fail", "success", "success"]
    async with sessions() as session:  # the datetime comes back as written, to the microsecond
        assert (await session.get(Task, "raw-progress")).completed_at == NOW
    assert len(raw_rows["stored_files"]) == 4 and len(raw_rows["webhook_deliveries"]) == 1


async def test_a_task_the_raw_writer_reschedules_is_due_exactly_then(deps: Deps, sessions, make_client_key) -> None:
    """Datetimes in SQLite are text: compared as text by every query, they must be SQLAlchemy's."""
    owner = (await make_client_key("raw")).id
    await add_tasks(sessions, owner, "ih_later", "ih_done", state="processing")
    await add_tasks(sessions, owner, "ih_finished", state="success", next_check_at=None)
    async with deps.raw_write() as tx:
        await tx.reschedule(["ih_later", "ih_finished"], NOW + timedelta(microseconds=1))

    async def due(at: datetime) -> list[str]:
        async with sessions() as session:  # rolled back: each look starts from the same table
            claimed = await queries.claim(session, Task.next_check_at, at, at + timedelta(hours=1), 10)
            return sorted(task.id for task in claimed)

    assert await due(NOW) == ["ih_done"]
    assert await due(NOW + timedelta(microseconds=1)) == ["ih_done", "ih_later"]  # a finished task is never revived


async def test_a_failed_or_cancelled_transaction_leaves_nothing_and_blocks_no_one(
    deps: Deps, sessions, make_client_key
) -> None:
    owner = (await make_client_key("raw")).id
    await add_tasks(sessions, owner, "ih_a", state="processing")
    with pytest.raises(RuntimeError):
        async with deps.raw_write() as tx:
            await updates.apply_updates(deps, tx, [("ih_a", Update(State.FAIL), "callback")])
            raise RuntimeError("the group broke")

    async def held_open() -> None:
        async with deps.raw_write() as tx:
            await tx.lock_heads(["ih_a"])
            await asyncio.sleep(60)

    holder = asyncio.create_task(held_open())
    await asyncio.sleep(0.2)
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    async with deps.write() as session:  # the ORM can write: nothing holds the lock
        await queries.reschedule(session, "ih_a", NOW)
    async with deps.raw_write() as tx:
        assert await updates.apply_updates(deps, tx, [("ih_a", Update(State.SUCCESS), "callback")]) == [Outcome.APPLIED]
    assert [task["state"] for task in (await rows_of(sessions, "ih_"))["tasks"]] == ["success"]


async def test_a_write_lock_held_elsewhere_past_the_bound_is_an_outage(
    database_url: str, on_postgres: bool, make_client_key
) -> None:
    if on_postgres:
        pytest.skip("SQLite's one write lock; PostgreSQL's outages are cut lines (tests/e2e/test_e2e_db_outage.py)")
    settings = gateway_settings(database_url, NO_PROVIDER, database_timeout_s=0.3)
    other = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with open_deps(settings) as deps:
            with pytest.raises(DatabaseUnavailable):
                async with deps.raw_write() as tx:
                    await tx.lock_heads(["ih_a"])
    finally:
        other.execute("ROLLBACK")
        other.close()


@given(st.datetimes(timezones=st.sampled_from([None, UTC])))
def test_a_datetime_is_stored_as_sqlalchemys_sqlite_text(moment: datetime) -> None:
    as_sqlalchemy_stores_it = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert sqlite_datetime(moment) == as_sqlalchemy_stores_it(moment)
