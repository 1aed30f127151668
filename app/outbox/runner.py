"""Working through due rows: claim them with a lease, work each outside any transaction, settle each.

A claim pushes each row's due time to the end of its lease (app/db/queries.py claim), in one short
transaction; the work (an HTTP call, a download) runs with no transaction open; its outcome is
written in another short one. A worker that dies mid-round leaves its rows leased: when the lease
runs out another worker claims them again, so the lease must outlast the slowest attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import Deps
from app.errors import GiveUp, RetryLater
from app.tasks.domain import Backoff, retry_at

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Done = TypeVar("Done")
Failure = RetryLater | GiveUp
Claim = Callable[[AsyncSession, datetime, datetime, int], Awaitable[Sequence[Row]]]


async def run_due(
    deps: Deps,
    claim: Claim[Row],
    lease: timedelta,
    limit: int,
    handle: Callable[[Row], Awaitable[str]],
    concurrency: int | None = None,
) -> list[str]:
    """Claim up to `limit` due rows for `lease`, then handle them, at most `concurrency` at once
    (all of them when None). Returns what each handling returned, in claim order."""
    now = deps.clock()
    async with deps.write() as session:
        rows = await claim(session, now, now + lease, limit)
    gate = asyncio.Semaphore(concurrency or max(len(rows), 1))

    async def gated(row: Row) -> str:
        async with gate:
            return await handle(row)

    return list(await asyncio.gather(*(gated(row) for row in rows)))


class Job(Protocol[Row, Done]):
    """One kind of attempt on a claimed row, and how its outcome is written."""

    def describe(self, row: Row) -> str:
        """What an attempt on row does, for the log line of one that broke."""
        ...

    async def work(self, row: Row) -> Done:
        """Make the attempt, with no transaction open; RetryLater or GiveUp when it fails."""
        ...

    async def settle(self, row: Row, outcome: Done | Failure) -> str:
        """Write the outcome in a short transaction; returns the name it is counted under."""
        ...


def settling(job: Job[Row, Done]) -> Callable[[Row], Awaitable[str]]:
    """A handler for run_due: work, then settle whatever came of it."""

    async def handle(row: Row) -> str:
        return await job.settle(row, await outcome(job, row))

    return handle


async def outcome(job: Job[Row, Done], row: Row) -> Done | Failure:
    try:
        return await job.work(row)
    except (RetryLater, GiveUp) as failure:
        return failure
    except Exception as exc:
        # One broken attempt must not stop the batch; it is retried like any transient failure.
        log.exception("%s failed", job.describe(row))
        return RetryLater(f"{type(exc).__name__}: {exc}"[:500])


def next_attempt(
    failure: Failure, backoff: Backoff, attempt: int, now: datetime, give_up_at: datetime
) -> datetime | None:
    """When to make `attempt` after `failure`; None to give up (it said so, or the retry would be too late)."""
    if isinstance(failure, GiveUp):
        return None
    return retry_at(backoff, attempt, now, give_up_at, failure.retry_after)
