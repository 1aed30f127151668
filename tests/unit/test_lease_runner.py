"""The lease runner (app/outbox/runner.py) and the one retry decision (domain.retry_at), without a database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.errors import DatabaseUnavailable, GiveUp, RetryLater
from app.outbox import runner
from app.tasks.domain import Backoff, retry_at

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=60)
FLAT = Backoff(base_s=10.0, cap_s=10.0, factor=1.0)  # jitter puts every step between 5 and 10 s


def test_a_retry_waits_one_backoff_step():
    at = retry_at(FLAT, 1, NOW, NOW + timedelta(hours=1))

    assert at is not None and NOW + timedelta(seconds=5) <= at <= NOW + timedelta(seconds=10)


def test_a_retry_after_longer_than_the_backoff_wins():
    assert retry_at(FLAT, 1, NOW, NOW + timedelta(hours=1), retry_after=60.0) == NOW + timedelta(seconds=60)


def test_a_retry_after_shorter_than_the_backoff_is_outwaited():
    at = retry_at(FLAT, 1, NOW, NOW + timedelta(hours=1), retry_after=1.0)

    assert at is not None and at >= NOW + timedelta(seconds=5)


def test_a_retry_past_the_deadline_gives_up():
    assert retry_at(FLAT, 1, NOW, NOW + timedelta(seconds=4)) is None
    assert retry_at(FLAT, 1, NOW, NOW + timedelta(hours=1), retry_after=3601.0) is None


def test_a_retry_right_at_the_deadline_still_happens():
    assert retry_at(FLAT, 1, NOW, NOW + timedelta(seconds=60), retry_after=60.0) == NOW + timedelta(seconds=60)


def test_the_backoff_grows_with_the_attempt():
    backoff = Backoff(base_s=2.0, cap_s=300.0)
    deadline = NOW + timedelta(days=1)
    late = retry_at(backoff, 6, NOW, deadline)

    assert late is not None and late >= NOW + timedelta(seconds=32)  # half of 2 * 2**5


def test_give_up_never_retries_and_retry_later_uses_retry_at():
    deadline = NOW + timedelta(hours=1)

    assert runner.next_attempt(GiveUp("host not allowed"), FLAT, 1, NOW, deadline) is None
    assert runner.next_attempt(RetryLater("HTTP 429", 90.0), FLAT, 1, NOW, deadline) == NOW + timedelta(seconds=90)
    assert runner.next_attempt(RetryLater("HTTP 429", 90.0), FLAT, 1, NOW, NOW + timedelta(seconds=30)) is None


@dataclass
class FakeDeps:
    """What run_due uses of Deps: a clock and short write transactions (here, counted)."""

    transactions: int = 0

    def clock(self) -> datetime:
        return NOW

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        self.transactions += 1
        yield None


@dataclass
class Table:
    """Due rows, claimed the way app/db/queries.py claim does: the first `limit`, leased until a time."""

    rows: list[str]
    leases: list[tuple[datetime, datetime, int]] = field(default_factory=list)

    async def claim(self, session: Any, now: datetime, lease_until: datetime, limit: int) -> Sequence[str]:
        self.leases.append((now, lease_until, limit))
        return self.rows[:limit]


async def test_rows_are_claimed_with_a_lease_and_handled_in_claim_order():
    deps, table = FakeDeps(), Table(["a", "b", "c"])

    async def handle(row: str) -> str:
        await asyncio.sleep(random.random() / 100)
        return row.upper()

    done = await runner.run_due(deps, table.claim, timedelta(seconds=70), 2, handle)

    assert done == ["A", "B"]
    assert table.leases == [(NOW, NOW + timedelta(seconds=70), 2)]
    assert deps.transactions == 1  # the claim; the handlers open their own


@pytest.mark.parametrize(("concurrency", "most_at_once"), [(3, 3), (None, 8)])
async def test_no_more_rows_are_worked_at_once_than_allowed(concurrency, most_at_once):
    running, peak = 0, 0

    async def handle(row: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "done"

    rows = [str(n) for n in range(8)]
    done = await runner.run_due(FakeDeps(), Table(rows).claim, timedelta(seconds=1), 10, handle, concurrency)

    assert done == ["done"] * 8
    assert peak == most_at_once


async def test_nothing_due_handles_nothing():
    async def handle(row: str) -> str:
        raise AssertionError("no row to handle")

    assert await runner.run_due(FakeDeps(), Table([]).claim, timedelta(seconds=1), 10, handle) == []


@dataclass
class Job:
    """A runner.Job whose work is given per row; it records what it was asked to settle."""

    work_of: dict[str, Any]
    settled: dict[str, Any] = field(default_factory=dict)

    def describe(self, row: str) -> str:
        return f"working on {row}"

    async def work(self, row: str) -> str:
        outcome = self.work_of[row]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def settle(self, session: Any, group: list[tuple[str, str | runner.Failure]]) -> list[str]:
        self.settled.update(group)
        return [outcome if isinstance(outcome, str) else type(outcome).__name__ for _, outcome in group]

    async def rescue(self, session: Any, row: str, outcome: str | runner.Failure) -> str:
        raise AssertionError("settle never breaks here")


async def test_each_outcome_is_settled():
    later, never = RetryLater("HTTP 503", 30.0), GiveUp("not an image")
    job = Job({"ok": "stored", "busy": later, "bad": never})

    done = await runner.run_jobs(FakeDeps(), Table(["ok", "busy", "bad"]).claim, LEASE, 10, job)

    assert done == ["stored", "RetryLater", "GiveUp"]
    assert job.settled == {"ok": "stored", "busy": later, "bad": never}


async def test_a_worker_that_breaks_settles_as_retry_and_the_batch_goes_on(caplog):
    job = Job({"broken": KeyError("boom"), "ok": "stored"})

    with caplog.at_level(logging.ERROR, logger=runner.__name__):
        done = await runner.run_jobs(FakeDeps(), Table(["broken", "ok"]).claim, LEASE, 10, job)

    assert done == ["RetryLater", "stored"]
    failure = job.settled["broken"]
    assert isinstance(failure, RetryLater)
    assert (failure.message, failure.retry_after) == ("KeyError: 'boom'", None)
    assert [record.getMessage() for record in caplog.records] == ["working on broken failed"]
    assert caplog.records[0].exc_info is not None  # the traceback is kept: this one is a bug


async def test_a_broken_workers_message_is_bounded():
    job = Job({"broken": ValueError("x" * 1000)})

    await runner.run_jobs(FakeDeps(), Table(["broken"]).claim, LEASE, 10, job)

    assert len(job.settled["broken"].message) == 500


@dataclass
class Slow(Job):
    """A Job whose row "slow" finishes only once every other row was settled."""

    async def work(self, row: str) -> str:
        while row == "slow" and len(self.settled) < len(self.work_of) - 1:
            await asyncio.sleep(0.01)
        return await super().work(row)


async def test_outcomes_that_finish_together_share_a_settle_and_a_slow_one_holds_none_back():
    deps, job = FakeDeps(), Slow({"a": "stored", "slow": "stored", "b": "stored"})

    async with asyncio.timeout(5):  # settling only once the whole batch finished would never end
        done = await runner.run_jobs(deps, Table(["a", "slow", "b"]).claim, LEASE, 10, job)

    assert done == ["stored"] * 3
    assert list(job.settled) == ["a", "b", "slow"]
    assert deps.transactions == 3  # the claim, a and b together, then the slow one


@dataclass
class Breaking(Job):
    """A Job whose settle raises `error` for the row "bad"; its rescue counts it as rescued."""

    error: Exception = field(default_factory=lambda: ValueError("bad row"))

    async def settle(self, session: Any, group: list[tuple[str, str | runner.Failure]]) -> list[str]:
        if any(row == "bad" for row, _ in group):
            raise self.error
        return await super().settle(session, group)

    async def rescue(self, session: Any, row: str, outcome: str | runner.Failure) -> str:
        return "rescued"


async def test_a_settle_that_breaks_on_one_row_costs_no_other_its_write(caplog):
    deps, job = FakeDeps(), Breaking({"a": "stored", "bad": "stored", "b": "stored"})

    done = await runner.run_jobs(deps, Table(["a", "bad", "b"]).claim, LEASE, 10, job)

    assert done == ["stored", "rescued", "stored"]
    assert deps.transactions == 1 + 1 + 3 + 1  # the claim, the group, each row alone, the rescue
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == [
        "settling (working on bad) failed"
    ]


async def test_an_outage_at_settle_leaves_the_batch_to_its_lease_in_one_log_line(caplog):
    deps, job = FakeDeps(), Breaking({"bad": "stored", "a": "stored"}, error=DatabaseUnavailable())

    with caplog.at_level(logging.INFO, logger=runner.__name__), pytest.raises(DatabaseUnavailable):
        await runner.run_jobs(deps, Table(["bad", "a"]).claim, LEASE, 10, job)

    assert deps.transactions == 2  # nothing is written again: the rows are claimed again after their lease
    assert [record.getMessage() for record in caplog.records] == [
        "Breaking batch of 2: unsettled 2; first error: database unavailable (DatabaseUnavailable)"
    ]
