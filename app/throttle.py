"""The upstream create-rate throttle, shared by every replica through the database.

Kie accepts at most 20 new tasks per 10 s per account and refuses (does not queue) the rest.
Every create first takes a slot here; without one, the task stays pending and the sweeper
sends it when the window has room, oldest first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import UpstreamSend
from app.deps import Deps

# Our clock starts the window before the request reaches the provider; a margin keeps
# network jitter from putting one create too many into the provider's window.
MARGIN = timedelta(seconds=0.5)


def limit_for(deps: Deps, provider: str) -> tuple[int, timedelta] | None:
    if provider == "kie" and deps.settings.kie_create_limit > 0:
        return deps.settings.kie_create_limit, timedelta(seconds=deps.settings.kie_create_window_s) + MARGIN
    return None


async def take_slot(deps: Deps, provider: str) -> datetime | None:
    """Reserve a create now (None), or say when the next slot frees."""
    limit = limit_for(deps, provider)
    if limit is None:
        return None
    count, window = limit
    now = deps.clock()
    async with deps.sessions.begin() as session:
        await _lock_window(session, provider, now - window)
        stmt = select(UpstreamSend.at).where(UpstreamSend.provider == provider).order_by(UpstreamSend.at.desc())
        recent = list((await session.execute(stmt.limit(count))).scalars())
        if len(recent) < count:
            session.add(UpstreamSend(provider=provider, at=now))
            return None
        return recent[-1] + window


async def _lock_window(session: AsyncSession, provider: str, window_start: datetime) -> None:
    """Serialize slot-taking across replicas; the same statement prunes the expired window.

    PostgreSQL: a transaction-scoped advisory lock per provider. SQLite: the DELETE makes
    this a write transaction at once, so it holds the database's single write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"imagehook-create-{provider}"))))
    await session.execute(delete(UpstreamSend).where(UpstreamSend.provider == provider, UpstreamSend.at < window_start))
