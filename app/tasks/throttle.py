"""The upstream create-rate throttle, shared by every replica through the database.

A provider with a create window (see CreateWindow) refuses, not queues, the creates beyond it.
Every create to such a provider first takes a slot here; without a slot, the task stays pending
and the sweeper sends it when the window has room, oldest first. The sweeper claims only as many
waiting tasks as the window has places for (free_places), so a task waiting in line costs no write.
A waiting task's place in that line, and when the window will have room for it, are read from the
same tables (place_in_line), so every replica tells the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.tables import Task, UpstreamSend
from app.deps import Deps
from app.providers.base import CreateWindow

Reader = AsyncSession | AsyncConnection  # what the reads of the window's sends run on


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


@dataclass(frozen=True)
class Place:
    """Where a task waiting to be sent stands."""

    position: int  # 1: the next to be sent
    starts_at: datetime  # the earliest the window has room for it (the sweeper sends it within a round of it)


def in_line(provider: str) -> ColumnElement[bool]:
    """The provider's tasks waiting to be sent: ix_tasks_send_queue's own condition, so that index serves it."""
    return and_(Task.provider == provider, Task.upstream_id.is_(None), Task.next_check_at.is_not(None))


# The order the sweeper claims waiting tasks in: due first, then oldest first.
LINE_ORDER = (Task.next_check_at, Task.created_at, Task.id)
# How much of a line one read takes: status reads of tasks further back count their place one by one.
LINE_HEAD = 10_000


@dataclass(frozen=True)
class Line:
    """The head of a provider's line of tasks waiting to be sent, as read at one moment."""

    ahead: dict[str, tuple[int, datetime]]  # task id: its position (1: next) and when it may be sent
    sends: list[datetime]  # the creates in the window then, newest first
    whole: bool  # every waiting task is in `ahead`; else only the first LINE_HEAD are
    limit: tuple[int, timedelta]  # the provider's create window

    def place(self, task_id: str, now: datetime) -> Place | None:
        """The task's place, if this line holds it."""
        found = self.ahead.get(task_id)
        if found is None:
            return None
        position, due = found
        return placed_at(position, due, self.sends, self.limit, now)


async def read_line(connection: AsyncConnection, provider: str, limit: tuple[int, timedelta], now: datetime) -> Line:
    """The first LINE_HEAD of the provider's waiting tasks, in indexed reads (ix_tasks_send_queue): their
    ids in line order, and the times of the few not due yet (a retry's backoff); the rest are due now.
    Ids alone, as times cost a conversion each and a line can be thousands long; on a Core connection,
    as the ORM would spend as much again making its rows."""
    head_stmt = select(Task.id).where(in_line(provider)).order_by(*LINE_ORDER).limit(LINE_HEAD + 1)
    ids = list((await connection.execute(head_stmt)).scalars())
    later_stmt = select(Task.id, Task.next_check_at).where(in_line(provider), Task.next_check_at > now)
    later: dict[str, datetime] = dict((await connection.execute(later_stmt.limit(LINE_HEAD))).all())  # type: ignore[arg-type]
    ahead = {task_id: (n, later.get(task_id, now)) for n, task_id in enumerate(ids[:LINE_HEAD], start=1)}
    return Line(ahead, await _sends(connection, provider, limit, now), whole=len(ids) <= LINE_HEAD, limit=limit)


async def place_in_line(
    session: AsyncSession, provider: str, limit: tuple[int, timedelta], task_id: str, now: datetime
) -> Place | None:
    """One task's place among the provider's waiting tasks, counted in the database: for a task
    further back than any Line holds. None if it is not waiting (sent, or finished)."""
    mine_stmt = select(Task.next_check_at, Task.created_at).where(Task.id == task_id, in_line(provider))
    mine = (await session.execute(mine_stmt)).one_or_none()
    if mine is None:
        return None
    due, created_at = mine
    ahead_stmt = select(func.count()).where(in_line(provider), tuple_(*LINE_ORDER) < tuple_(due, created_at, task_id))
    position = (await session.execute(ahead_stmt)).scalar_one() + 1
    return placed_at(position, due, await _sends(session, provider, limit, now), limit, now)


def placed_at(
    position: int, due: datetime, sends: list[datetime], limit: tuple[int, timedelta], now: datetime
) -> Place:
    # A retry waits for its backoff whatever room the window has.
    return Place(position, max(due, place_frees(position, sends, limit, now)))


async def _sends(connection: Reader, provider: str, limit: tuple[int, timedelta], now: datetime) -> list[datetime]:
    count, window = limit
    sends_stmt = select(UpstreamSend.at).where(UpstreamSend.provider == provider, UpstreamSend.at >= now - window)
    return list((await connection.execute(sends_stmt.order_by(UpstreamSend.at.desc()).limit(count))).scalars())


def place_frees(position: int, sends: list[datetime], limit: tuple[int, timedelta], now: datetime) -> datetime:
    """When the window has room for the position-th create from now, given the sends it holds (newest
    first, as read): its free places now, then one as each send ages out, oldest first; each place
    used then frees again a window later. Picked, not sorted: every read of a queued task asks."""
    count, window = limit
    laps, index = divmod(position - 1, count)
    free_now = max(0, count - len(sends))
    frees = now if index < free_now else max(now, sends[len(sends) - 1 - (index - free_now)] + window)
    return frees + laps * window


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
