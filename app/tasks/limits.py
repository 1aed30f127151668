"""Per-key limits, checked at submit inside the transaction that stores the task.

The database is the source of truth: the first statement locks the key's row (PostgreSQL)
or takes the write lock (SQLite), so concurrent submissions of one key, on any replica,
are counted one after another and can never overspend together.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.tables import ApiKey, Task
from app.errors import PaymentRequired, TooManyRequests
from app.tasks.domain import State

RATE_WINDOW = timedelta(minutes=1)
IN_FLIGHT_RETRY_AFTER_S = 5  # a hint: tasks usually finish within seconds to minutes


async def enforce(session: AsyncSession, api_key_id: int, now: datetime, reserve: float) -> None:
    """Raise 429 or 402 if one more task of `reserve` credits would break one of the key's limits."""
    locked = update(ApiKey).where(ApiKey.id == api_key_id).values(rate_per_minute=ApiKey.rate_per_minute)
    await session.execute(locked.returning(ApiKey.id))
    key = (await session.execute(select(ApiKey).where(ApiKey.id == api_key_id))).scalar_one()
    if key.rate_per_minute is not None:
        await _check_rate(session, key, now)
    if key.max_in_flight is not None:
        await _check_in_flight(session, key)
    day_start, month_start = budget_periods(now)
    for budget, since, period in (
        (key.daily_credit_budget, day_start, "Daily"),
        (key.monthly_credit_budget, month_start, "Monthly"),
    ):
        if budget is not None:
            await _check_budget(session, key.id, budget, since, reserve, period)


async def _check_rate(session: AsyncSession, key: ApiKey, now: datetime) -> None:
    stmt = select(func.count(), func.min(Task.created_at)).where(
        Task.api_key_id == key.id, Task.created_at > now - RATE_WINDOW
    )
    count, oldest = (await session.execute(stmt)).one()
    if count >= key.rate_per_minute:
        # `now` was read before this request waited for the key's lock, so a task committed
        # meanwhile can look newer than it: the window itself bounds the wait.
        window_s = RATE_WINDOW.total_seconds()
        retry_after = min(int(window_s), max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds())))
        raise TooManyRequests(
            f"Rate limit of {key.rate_per_minute} submissions per minute reached; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def budget_periods(now: datetime) -> tuple[datetime, datetime]:
    """The starts of the UTC day and month budgets count from."""
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day_start, day_start.replace(day=1)


async def in_flight(session: AsyncSession, key_id: int) -> int:
    stmt = select(func.count()).where(
        Task.api_key_id == key_id, Task.state.in_([State.PENDING.value, State.PROCESSING.value])
    )
    return int((await session.execute(stmt)).scalar_one())


async def credits_used(session: AsyncSession, key_id: int, since: datetime) -> float:
    """Finished tasks count what they cost; unfinished ones what they reserved."""
    spent_or_reserved = func.coalesce(func.sum(func.coalesce(Task.credits, Task.credit_reserve)), 0.0)
    stmt = select(spent_or_reserved).where(Task.api_key_id == key_id, Task.created_at >= since)
    return float((await session.execute(stmt)).scalar_one())


async def _check_in_flight(session: AsyncSession, key: ApiKey) -> None:
    if await in_flight(session, key.id) >= key.max_in_flight:
        raise TooManyRequests(
            f"Limit of {key.max_in_flight} tasks in flight reached; retry when one finishes",
            headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_S)},
        )


async def _check_budget(
    session: AsyncSession, key_id: int, budget: float, since: datetime, reserve: float, period: str
) -> None:
    used = await credits_used(session, key_id, since)
    if used + reserve > budget:
        raise PaymentRequired(
            f"{period} credit budget of {budget:g} reached: {used:g} used or reserved, this task reserves {reserve:g}"
        )
