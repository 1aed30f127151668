"""Working through due rows: claim them with a lease, work each outside any transaction, settle them.

A claim pushes each row's due time to the end of its lease (app/db/queries.py claim), in one short
transaction; the work (an HTTP call, a download) runs with no transaction open; the outcomes are
written together in another short one (run_jobs), or in a few when some attempts are slow. A worker
that dies mid-round, or cannot reach the database to settle, leaves its rows leased: when the lease
runs out another worker claims them again, so the lease must outlast the slowest attempt and the
wait for its settle.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.outage import is_outage
from app.deps import Deps
from app.errors import GiveUp, RetryLater
from app.tasks.domain import Backoff, retry_at

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Done = TypeVar("Done")
T = TypeVar("T")
Failure = RetryLater | GiveUp
UNSETTLED = "unsettled"
# How long a finished attempt waits for the rest of its batch to share its settle transaction. Under
# load a batch finishes together and is settled in one; a slow attempt keeps no other waiting longer.
SETTLE_WINDOW_S = 0.5
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
    rows = await claim_due(deps, claim, lease, limit)
    handle = at_most(concurrency, len(rows), handle)
    return list(await asyncio.gather(*(handle(row) for row in rows)))


async def claim_due(deps: Deps, claim: Claim[Row], lease: timedelta, limit: int) -> Sequence[Row]:
    """Up to `limit` due rows, leased until `lease` from now, in one short transaction of their own."""
    now = deps.clock()
    async with deps.write() as session:
        return await claim(session, now, now + lease, limit)


def at_most(concurrency: int | None, count: int, work: Callable[[Row], Awaitable[T]]) -> Callable[[Row], Awaitable[T]]:
    """`work`, run for at most `concurrency` rows at once (all `count` of them when None)."""
    gate = asyncio.Semaphore(concurrency or max(count, 1))

    async def gated(row: Row) -> T:
        async with gate:
            return await work(row)

    return gated


class Job(Protocol[Row, Done]):
    """One kind of attempt on a claimed row, and how its outcome is written. A Done may carry a
    `failure` (an answer that asks for a retry); it is what the batch's log line quotes."""

    def describe(self, row: Row) -> str:
        """What an attempt on row does, for the log lines about it."""
        ...

    async def work(self, row: Row) -> Done:
        """Make the attempt, with no transaction open; RetryLater or GiveUp when it fails."""
        ...

    async def settle(self, session: AsyncSession, group: Sequence[tuple[Row, Done | Failure]]) -> list[str]:
        """Write the outcomes of a group of rows, in claim order, in session's transaction; returns the
        name each is counted under. Writing the same outcome twice must do no more harm than once."""
        ...

    async def rescue(self, session: AsyncSession, row: Row, outcome: Done | Failure) -> str:
        """Write the least that moves row on, after settle broke on this row alone."""
        ...


async def run_jobs(
    deps: Deps, claim: Claim[Row], lease: timedelta, limit: int, job: Job[Row, Done], concurrency: int | None = None
) -> list[str]:
    """Claim up to `limit` due rows for `lease`, work them (at most `concurrency` at once, all of them
    when None) with no transaction open, and settle the outcomes in shared transactions: those that
    finish within SETTLE_WINDOW_S of each other in one. Returns what each row was counted under, in
    claim order; one log line tells how the batch went."""
    rows = await claim_due(deps, claim, lease, limit)
    if not rows:
        return []
    worked = at_most(concurrency, len(rows), functools.partial(outcome, job))
    batch = Batch(deps, job, rows)
    async with asyncio.TaskGroup() as tasks:
        pending = {tasks.create_task(worked(row)): n for n, row in enumerate(rows)}
        running = set(pending)
        while running:
            finished, running = await next_group(running)
            await batch.settle([(pending[task], task.result()) for task in finished])
    return batch.counted()


async def outcome(job: Job[Row, Done], row: Row) -> Done | Failure:
    try:
        return await job.work(row)
    except (RetryLater, GiveUp) as failure:
        return failure
    except Exception as exc:
        # One broken attempt must not stop the batch; it is retried like any transient failure.
        log.exception("%s failed", job.describe(row))
        return RetryLater(f"{type(exc).__name__}: {exc}"[:500])


async def next_group(running: set[asyncio.Task[T]]) -> tuple[set[asyncio.Task[T]], set[asyncio.Task[T]]]:
    """The work that finishes first, with all that finishes within SETTLE_WINDOW_S after it; and the rest."""
    finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    if running:
        more, running = await asyncio.wait(running, timeout=SETTLE_WINDOW_S)
        finished |= more
    return finished, running


@dataclass
class Batch(Generic[Row, Done]):
    """The claimed rows of one round, settled group by group, and what each was counted under."""

    deps: Deps
    job: Job[Row, Done]
    rows: Sequence[Row]
    names: dict[int, str] = field(default_factory=dict)
    first_error: str | None = None
    outage: Exception | None = None

    async def settle(self, group: list[tuple[int, Any]]) -> None:
        """Write the outcomes of group, (claim index, outcome) pairs, in one transaction if it can be."""
        group.sort(key=lambda pair: pair[0])  # claim order: the order rows are locked in, on every replica
        names = await self._settled([(self.rows[n], outcome) for n, outcome in group])
        for (n, outcome), name in zip(group, names, strict=True):
            self.names[n] = name
            self._note(self.rows[n], outcome, name)

    async def _settled(self, group: list[tuple[Row, Any]]) -> list[str]:
        try:
            return await self._write(self.job.settle, group)
        except Exception as exc:
            if is_outage(exc):
                return self._unsettled(group, exc)
            if len(group) > 1:
                # It was rolled back as a whole: each row is settled on its own, so one costs no other its write.
                return [name for one in group for name in await self._settled([one])]
            log.exception("settling (%s) failed", self.job.describe(group[0][0]))
        try:
            return await self._write(self._rescue, group)
        except Exception as exc:
            if not is_outage(exc):
                log.exception("rescuing (%s) failed", self.job.describe(group[0][0]))
            return self._unsettled(group, exc)

    async def _write(
        self, write: Callable[[AsyncSession, list[Any]], Awaitable[list[str]]], group: list[Any]
    ) -> list[str]:
        async with self.deps.write() as session:
            return await write(session, group)

    async def _rescue(self, session: AsyncSession, group: list[tuple[Row, Any]]) -> list[str]:
        return [await self.job.rescue(session, row, outcome) for row, outcome in group]

    def _unsettled(self, group: list[Any], exc: Exception) -> list[str]:
        """Nothing is known to be written (an outage may even cut off a commit that went through), so
        nothing is written again: the rows keep their lease and are claimed again once it runs out."""
        self.outage = self.outage or exc
        return [UNSETTLED] * len(group)

    def _note(self, row: Row, outcome: Any, name: str) -> None:
        failure = outcome if isinstance(outcome, RetryLater | GiveUp) else getattr(outcome, "failure", None)
        error = failure.message if failure is not None else None
        self.first_error = self.first_error or error
        log.debug("%s: %s%s", self.job.describe(row), name, f" ({error})" if error else "")

    def counted(self) -> list[str]:
        """Each row's name, in claim order, after the batch's one log line; an outage met on the way is raised."""
        names = [self.names[n] for n in range(len(self.rows))]
        counts = ", ".join(f"{name} {count}" for name, count in Counter(names).items())
        trouble = self.first_error is not None or self.outage is not None
        error = self.first_error or (self.outage and f"database unavailable ({type(self.outage).__name__})")
        log.log(
            logging.WARNING if trouble else logging.DEBUG,
            "%s batch of %d: %s%s",
            type(self.job).__name__,
            len(names),
            counts,
            f"; first error: {error}" if trouble else "",
        )
        if self.outage is not None:
            raise self.outage
        return names


def next_attempt(
    failure: Failure, backoff: Backoff, attempt: int, now: datetime, give_up_at: datetime
) -> datetime | None:
    """When to make `attempt` after `failure`; None to give up (it said so, or the retry would be too late)."""
    if isinstance(failure, GiveUp):
        return None
    return retry_at(backoff, attempt, now, give_up_at, failure.retry_after)
