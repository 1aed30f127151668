"""The upstream create-rate throttle, shared by every replica through the database.

A provider with a create window (see CreateWindow) refuses, not queues, the creates beyond it.
Every create to such a provider first takes a slot here; without a slot, the task stays pending
and the sweeper sends it when the window has room, oldest first. The sweeper claims only as many
waiting tasks as the window has places for (free_places), so a task waiting in line costs no write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.tables import UpstreamSend
from app.deps import Deps
from app.providers.base import CreateWindow


@dataclass(frozen=True)
class Slot:
    id: int | None = None  # granted: this create's place in the window
    free_at: datetime | None = None  # refused: when a place frees


def limit_for(deps: Deps, provider: str) -> tuple[int, timedelta] | None:
    """The provider's create window: at most `count` creates per `window`; None if it has none."""
    client = deps.providers.get(provider)
    return client.create_limit() if isinstance(client, CreateWindow) else None


def windows(deps: Deps) -> dict[str, tuple[int, timedelta]]:
    """The create window of every configured provider that has one, by provider name."""
    limits = {name: client.create_limit() for name, client in deps.providers.having(CreateWindow).items()}
    return {name: limit for name, limit in limits.items() if limit is not None}


async def free_places(session: AsyncSession, provider: str, limit: tuple[int, timedelta], now: datetime) -> int:
    """How many creates the provider's window would take now. Only a count: take_slot still decides."""
    count, window = limit
    in_window = UpstreamSend.provider == provider, UpstreamSend.at >= now - window  # what take_slot keeps
    taken = (await session.execute(select(func.count()).select_from(UpstreamSend).where(*in_window))).scalar_one()
    return max(0, count - taken)


async def take_slot(deps: Deps, provider: str) -> Slot:
    """A place in the provider's create window now, or when the next one frees."""
    limit = limit_for(deps, provider)
    if limit is None:
        return Slot()
    count, window = limit
    now = deps.clock()
    async with deps.write() as session:
        await _lock_window(session, provider, now - window)
        stmt = select(UpstreamSend.at).where(UpstreamSend.provider == provider).order_by(UpstreamSend.at.desc())
        recent = list((await session.execute(stmt.limit(count))).scalars())
        if len(recent) < count:
            send = UpstreamSend(provider=provider, at=now)
            session.add(send)
            await session.flush()
            return Slot(id=send.id)
        return Slot(free_at=recent[-1] + window)


async def mark_sent(deps: Deps, slot: Slot) -> None:
    """Restamp the create with the moment its call returned: the provider counted it at
    arrival, which is no later than that, so the next window can never overlap it."""
    if slot.id is not None:
        async with deps.write() as session:
            await session.execute(update(UpstreamSend).where(UpstreamSend.id == slot.id).values(at=deps.clock()))


async def _lock_window(session: AsyncSession, provider: str, window_start: datetime) -> None:
    """Serialize slot-taking across replicas; the same statement prunes the expired window.

    PostgreSQL: a transaction-scoped advisory lock per provider. SQLite: the DELETE makes
    this a write transaction at once, so it holds the database's single write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"imagehook-create-{provider}"))))
    await session.execute(delete(UpstreamSend).where(UpstreamSend.provider == provider, UpstreamSend.at < window_start))
