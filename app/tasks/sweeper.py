"""The fallback sweeper: sends tasks that never reached their provider, asks it about tasks
whose callback is late or that must be polled, cancels tasks whose Cancel-After deadline passed, and
times out tasks that never finish. Safe to run on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import ColumnElement, and_, not_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import queries
from app.db.outage import is_outage
from app.db.tables import Task
from app.db.task_writer import SessionWriter
from app.deps import Deps
from app.errors import DatabaseUnavailable, NotConfigured, ProviderError, UpstreamRejected
from app.observe import metrics
from app.observe.logs import about_task
from app.outbox import runner
from app.outbox.copies import BATCH_SIZE as COPY_BATCH_SIZE
from app.outbox.copies import copy_due
from app.outbox.deliveries import deliver_due
from app.providers.catalogue import MODELS, ModelSpec
from app.tasks import submit, throttle, updates
from app.tasks.cancel import DEADLINE_PASSED
from app.tasks.domain import TIMED_OUT_MSG, Backoff, State, Update

log = logging.getLogger(__name__)

BATCH_SIZE = 50
CONCURRENCY = 10


def check_backoff(deps: Deps, spec: ModelSpec) -> Backoff:
    """Later checks: a task with a late callback is asked quickly at first, then at most
    every 5 minutes; a polled task (no callbacks) every few seconds, then at most every 30 s."""
    if spec.api.callback_route is None:
        return Backoff(base_s=deps.settings.poll_interval_s, cap_s=30.0, factor=1.5)
    return Backoff(base_s=max(min(deps.settings.stale_after_s, 15.0), 0.5), cap_s=300.0)


async def sweep_once(deps: Deps, limit: int = BATCH_SIZE) -> Counter[str]:
    """Claim due tasks and webhooks, and work each outside any transaction. Returns what was done."""
    # A claim is a lease: if this sweeper dies mid-round, another one picks the task up, but not
    # before a create it may have sent could have been answered by its callback.
    lease = max(timedelta(seconds=2 * deps.settings.upstream_timeout_s + 10), submit.unknown_outcome_hold(deps))
    claim = partial(claim_tasks, deps)
    done = Counter(await runner.run_due(deps, claim, lease, limit, partial(visit_task, deps), CONCURRENCY))
    return done + await deliver_due(deps)


async def claim_tasks(
    deps: Deps, session: AsyncSession, now: datetime, lease_until: datetime, limit: int
) -> list[Task]:
    """Due tasks; but of those waiting for a place in a provider's create window, only as many as it
    has places for now. The others stay due and untouched, costing no write, until places free."""
    windows = throttle.windows(deps)
    in_line = {provider: waiting_to_be_sent(deps, provider, now) for provider in windows}
    others = not_(or_(*in_line.values())) if in_line else None
    tasks = list(await queries.claim(session, Task.next_check_at, now, lease_until, limit, only=others))
    for provider, waiting in in_line.items():
        places = min(limit - len(tasks), await throttle.free_places(session, provider, windows[provider], now))
        if places > 0:
            tasks += await queries.claim(session, Task.next_check_at, now, lease_until, places, only=waiting)
    return tasks


def waiting_to_be_sent(deps: Deps, provider: str, now: datetime) -> ColumnElement[bool]:
    """The provider's tasks not yet sent upstream, but for those past their timeout or deadline: the
    sweeper ends those whether or not the window has room."""
    timed_out_before = now - timedelta(seconds=deps.settings.task_timeout_s)
    before_deadline = or_(Task.cancel_at.is_(None), Task.cancel_at > now)
    return and_(throttle.in_line(provider), Task.created_at > timed_out_before, before_deadline)


async def visit_task(deps: Deps, task: Task) -> str:
    """Each path settles the task itself (submit, updates); a visit that breaks leaves it to its lease."""
    with about_task(task.id):
        return await _visit(deps, task)


async def _visit(deps: Deps, task: Task) -> str:
    try:
        if task.cancel_at is not None and deps.clock() >= task.cancel_at:
            await updates.update_task(deps, task.id, DEADLINE_PASSED, "deadline")
            return "deadline_passed"
        if deps.clock() >= task.created_at + timedelta(seconds=deps.settings.task_timeout_s):
            await updates.update_task(
                deps, task.id, Update(State.FAIL, fail_code="timeout", fail_msg=TIMED_OUT_MSG), "sweep"
            )
            return "timed_out"
        if task.upstream_id is None:
            await submit.send_task(deps, task)
            return "resubmitted"
        return await check_task(deps, task)
    except UpstreamRejected:
        return "rejected"
    except NotConfigured:
        return "no_provider"
    except DatabaseUnavailable:
        return "db_unavailable"  # no bug to trace: the lease expires and a later round retries
    except Exception:
        # One bad task must not stop the round; its lease expires and it is retried.
        log.exception("sweeper failed on task %s", task.id)
        return "error"


async def check_task(deps: Deps, task: Task) -> str:
    assert task.upstream_id is not None
    spec = MODELS[task.model]
    try:
        change = await submit.provider_for(deps, spec).query(spec.api, task.upstream_id)
    except ProviderError as exc:
        log.info("status query for %s failed: %s", task.id, exc.message)
        change = None
    if change is not None and change.state.terminal:
        await updates.update_task(deps, task.id, change, "sweep")
        return "completed"
    attempt = task.check_attempts + 1
    async with deps.write() as session:
        if change is not None:
            await updates.apply_update(deps, SessionWriter(session), task.id, change, "sweep")
        next_check = submit.retry_before_deadline(deps, task, check_backoff(deps, spec), attempt)
        await queries.reschedule(session, task.id, next_check, check_attempts=attempt)
    return "checked"


async def run_sweeper(deps: Deps, interval_s: float, stopping: asyncio.Event | None = None) -> None:
    """Sweep until `stopping` is set: tasks and webhooks in one loop, image copies in another,
    so a slow download never holds up a status check or a webhook."""
    stopping = stopping or asyncio.Event()
    await asyncio.gather(
        _repeat("sweep", lambda: sweep_once(deps), BATCH_SIZE, interval_s, stopping),
        _repeat("copies", lambda: copy_due(deps), COPY_BATCH_SIZE, interval_s, stopping),
    )


def count_outcomes(done: Counter[str]) -> None:
    """A round's webhook and copy outcomes, as metrics (its task outcomes are counted as committed)."""
    for outcome, count in done.items():
        kind, _, what = outcome.partition("_")
        if kind == "webhook":
            metrics.labelled(metrics.WEBHOOK_DELIVERIES, what).inc(count)
        elif kind == "copy":
            metrics.labelled(metrics.RESULT_COPIES, what).inc(count)


async def _repeat(
    name: str, one_round: Callable[[], Awaitable[Counter[str]]], batch: int, interval_s: float, stopping: asyncio.Event
) -> None:
    """Run whole rounds until stopped; a full batch means more is due, so the next round starts at once."""
    while not stopping.is_set():
        try:
            done = await one_round()
        except Exception as exc:
            if is_outage(exc):  # one line a round, no traceback: an outage is no bug
                log.warning("%s round failed: database unavailable (%s)", name, type(exc.__cause__ or exc).__name__)
            else:
                log.exception("%s round failed", name)
            done = Counter()
        if done:
            log.info("%s: %s", name, dict(done))
            count_outcomes(done)
        if done.total() < batch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
