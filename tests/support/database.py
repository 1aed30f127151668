"""The database tiers' fixtures (tests/db and tests/e2e import them into their conftest) and row readers."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db.tables import ApiKey, Base, CallbackEvent, Task, TaskEvent
from app.keys import hash_key, new_webhook_secret


@pytest.fixture(autouse=True)
async def empty_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(delete(table))


@dataclass
class ClientKey:
    key: str
    webhook_secret: str
    id: int


MakeClientKey = Callable[[str], Awaitable[ClientKey]]
MakeKey = Callable[[str], Awaitable[str]]


@pytest.fixture
def make_client_key(sessions: async_sessionmaker[Any]) -> MakeClientKey:
    async def make(name: str = "client") -> ClientKey:
        key, secret = "ih_" + secrets.token_urlsafe(32), new_webhook_secret()
        row = ApiKey(
            name=name, key_hash=hash_key(key), prefix=key[:10], webhook_secret=secret, created_at=datetime.now(UTC)
        )
        async with sessions.begin() as session:
            session.add(row)
        return ClientKey(key, secret, row.id)

    return make


@pytest.fixture
def make_key(make_client_key: MakeClientKey) -> MakeKey:
    async def make(name: str = "client") -> str:
        return (await make_client_key(name)).key

    return make


async def count_rows(sessions: async_sessionmaker[Any], model: type[Base]) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def load_task(sessions: async_sessionmaker[Any], task_id: str) -> Task:
    async with sessions() as session:
        task = await session.get(Task, task_id)
    assert task is not None
    return task


async def callback_verdicts(sessions: async_sessionmaker[Any], task_id: str) -> list[str]:
    async with sessions() as session:
        stmt = select(CallbackEvent.verdict).where(CallbackEvent.task_id == task_id).order_by(CallbackEvent.id)
        return list((await session.execute(stmt)).scalars())


async def task_events(sessions: async_sessionmaker[Any], task_id: str) -> list[tuple[str, str, str]]:
    async with sessions() as session:
        stmt = select(TaskEvent.source, TaskEvent.to_state, TaskEvent.outcome).where(TaskEvent.task_id == task_id)
        return [tuple(row) for row in await session.execute(stmt.order_by(TaskEvent.id))]
