"""Sending due webhooks from the outbox, recording each attempt, and the deliveries API data.

The sweeper claims due deliveries with a lease (app/outbox/runner.py), sends each outside any
transaction and records the attempts together in a short one.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import queries
from app.db.tables import ApiKey, Task, WebhookAttempt, WebhookDelivery
from app.deps import Deps
from app.errors import GiveUp, NotFound, RetryLater
from app.inbound.untrusted import clean_text
from app.outbox import runner
from app.outbox.outbound import DestinationRefused
from app.outbox.webhooks import signed_request, signing_secrets
from app.providers.http import retry_after
from app.tasks.domain import Backoff
from app.tasks.status import status_body

BATCH_SIZE = 20
KEPT_RESPONSE_CHARS = 2048  # enough to debug a receiver, never a way to fill our disk
CUT_SHORT = " [answer cut short]"
KEPT_RESPONSE_BYTES = 4 * KEPT_RESPONSE_CHARS  # read of an answer at most: UTF-8 takes up to 4 bytes a character


@dataclass(frozen=True)
class Result:
    """What one attempt got: the receiver's status and the start of its answer, and `failure` unless
    that ended the delivery (2xx: delivered; 410: gone, the receiver asked us to stop)."""

    status_code: int | None = None
    response_body: str | None = None
    failure: runner.Failure | None = None

    @property
    def error(self) -> str | None:
        """Why there was no answer at all; an answer's status says the rest."""
        return self.failure.message if self.failure is not None and self.status_code is None else None


@dataclass(frozen=True)
class Due:
    """A claimed delivery, with its key (the signing secrets) and its task (the payload), if not purged."""

    delivery: WebhookDelivery
    key: ApiKey
    task: Task | None


@dataclass(frozen=True)
class Attempted:
    """An attempt that was made: what was sent, what came of it, how long it took."""

    body: dict[str, Any]
    result: Result
    duration_ms: int

    @property
    def failure(self) -> runner.Failure | None:
        """Why the delivery goes on, if it does: what the runner's log line of the batch quotes."""
        return self.result.failure


async def deliver_due(deps: Deps, limit: int = BATCH_SIZE) -> Counter[str]:
    lease = timedelta(seconds=2 * deps.settings.webhook_timeout_s + 10)
    outcomes = await runner.run_jobs(deps, claim_deliveries, lease, limit, Sender(deps))
    return Counter(f"webhook_{outcome}" for outcome in outcomes)


async def claim_deliveries(session: AsyncSession, now: datetime, lease_until: datetime, limit: int) -> list[Due]:
    deliveries = await queries.claim(session, WebhookDelivery.next_attempt_at, now, lease_until, limit)
    key_ids = {delivery.api_key_id for delivery in deliveries}
    keys = {key.id: key for key in (await session.execute(select(ApiKey).where(ApiKey.id.in_(key_ids)))).scalars()}
    task_ids = {delivery.task_id for delivery in deliveries}
    tasks = {task.id: task for task in (await session.execute(select(Task).where(Task.id.in_(task_ids)))).scalars()}
    return [Due(delivery, keys[delivery.api_key_id], tasks.get(delivery.task_id)) for delivery in deliveries]


@dataclass(frozen=True)
class Sender:
    """Sending one webhook (runner.Job), counted by the state it leaves the delivery in."""

    deps: Deps

    def describe(self, due: Due) -> str:
        return f"sending webhook delivery {due.delivery.id}"

    async def work(self, due: Due) -> Attempted:
        if self.deps.clock() >= due.delivery.give_up_at:  # e.g. a lease that ran out after the last allowed attempt
            raise GiveUp("retry window ended")
        body = payload(self.deps, due.delivery, due.task)
        started = time.monotonic()
        result = await attempt(self.deps, due.delivery, due.key, body)
        return Attempted(body, result, round((time.monotonic() - started) * 1000))

    async def settle(self, session: AsyncSession, group: Sequence[tuple[Due, Attempted | runner.Failure]]) -> list[str]:
        return [await self._settle_one(session, due, outcome) for due, outcome in group]

    async def _settle_one(self, session: AsyncSession, due: Due, outcome: Attempted | runner.Failure) -> str:
        if isinstance(outcome, Attempted):
            return await record(self.deps, session, due.delivery, outcome)
        return await self._moved_on(session, due, outcome, outcome.message)

    async def rescue(self, session: AsyncSession, due: Due, outcome: Attempted | runner.Failure) -> str:
        # The attempt happened: settle it anyway, or the receiver would get it again at every lease.
        if isinstance(outcome, Attempted):
            return await self._moved_on(session, due, outcome.result, "the attempt could not be recorded")
        return await self._moved_on(session, due, outcome, outcome.message)

    async def _moved_on(self, session: AsyncSession, due: Due, outcome: Result | runner.Failure, error: str) -> str:
        state, next_attempt = next_step(self.deps, due.delivery, outcome, self.deps.clock())
        await settle(session, due.delivery, state, next_attempt, error)
        return state


def payload(deps: Deps, delivery: WebhookDelivery, task: Task | None) -> dict[str, Any]:
    """Rendered at the first attempt (by then the images are usually copied, so it carries
    imagehook's own URLs), then kept: every retry and replay sends the same bytes."""
    if delivery.payload or task is None:
        return delivery.payload
    return {"type": delivery.event_type, **status_body(task, deps.settings.public_base_url)}


async def settle(
    session: AsyncSession, delivery: WebhookDelivery, state: str, next_attempt: datetime | None, error: str
) -> None:
    """Move a delivery on without an attempt row. Absolute values, not increments: written twice, the same."""
    values = {"state": state, "next_attempt_at": next_attempt, "attempts": delivery.attempts + 1, "last_error": error}
    await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values))


async def attempt(deps: Deps, delivery: WebhookDelivery, key: ApiKey, body: dict[str, Any]) -> Result:
    content, headers = signed_request(delivery, body, signing_secrets(key, deps.clock()))
    timeout = deps.settings.webhook_timeout_s
    answer = Answer()
    try:
        # httpx bounds each read; a receiver that trickles its answer is bounded here, as a whole.
        async with asyncio.timeout(2 * timeout):
            stream = deps.outbound.webhooks.stream(
                "POST", delivery.url, content=content, headers=headers, timeout=timeout
            )
            async with stream as response:
                await answer.read(response)
    except (TimeoutError, httpx.HTTPError) as exc:
        if answer.status_code is None:  # no answer at all: worth another try
            return Result(failure=RetryLater(_described(exc, f"no answer within {2 * timeout:g} s")))
        answer.cut_short = True
    except (DestinationRefused, httpx.InvalidURL, ValueError) as exc:
        # Never sendable: a bad IDNA host, say, or an address the policy refuses (checked as it connects).
        return Result(failure=GiveUp(_described(exc)))
    return Result(answer.status_code, answer.body, answer.failure)


@dataclass
class Answer:
    """What a receiver answered: its status at once, then the start of its body (never all of it:
    a receiver must not be able to fill our memory)."""

    status_code: int | None = None
    retry_after: float | None = None
    encoding: str = "utf-8"
    kept: bytearray = field(default_factory=bytearray)
    cut_short: bool = False

    async def read(self, response: httpx.Response) -> None:
        self.status_code, self.retry_after = response.status_code, retry_after(response)
        self.encoding = response.encoding or "utf-8"
        async for chunk in response.aiter_bytes():
            self.kept += chunk
            if len(self.kept) >= KEPT_RESPONSE_BYTES:
                break

    @property
    def failure(self) -> RetryLater | None:
        """None when the answer ends the delivery: 2xx (delivered) or 410 (gone)."""
        assert self.status_code is not None
        if 200 <= self.status_code < 300 or self.status_code == 410:
            return None
        return RetryLater(f"HTTP {self.status_code}", self.retry_after)

    @property
    def body(self) -> str:
        """At most KEPT_RESPONSE_CHARS, the column's length, the mark of an answer cut short included."""
        mark = CUT_SHORT if self.cut_short else ""
        text = bytes(self.kept[:KEPT_RESPONSE_BYTES]).decode(self.encoding, errors="replace")
        return text[: KEPT_RESPONSE_CHARS - len(mark)] + mark


def _described(exc: BaseException, default: str = "") -> str:
    return f"{type(exc).__name__}: {str(exc) or default}"[:500]


async def record(deps: Deps, session: Any, delivery: WebhookDelivery, attempted: Attempted) -> str:
    now, result = deps.clock(), attempted.result
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            at=now,
            status_code=result.status_code,
            # A receiver's answer is kept whatever it holds; a NUL in it must not lose the attempt.
            error=None if result.error is None else clean_text(result.error),
            response_body=None if result.response_body is None else clean_text(result.response_body),
            duration_ms=attempted.duration_ms,
        )
    )
    state, next_attempt = next_step(deps, delivery, result, now)
    values: dict[str, Any] = {
        "state": state,
        "payload": attempted.body,  # what the receiver was last sent
        "attempts": delivery.attempts + 1,
        "next_attempt_at": next_attempt,
        "last_status": result.status_code,
        "last_error": None if result.error is None else clean_text(result.error),
    }
    if state == "delivered":
        values["delivered_at"] = now
    await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values))
    return state


def next_step(
    deps: Deps, delivery: WebhookDelivery, outcome: Result | runner.Failure, now: datetime
) -> tuple[str, datetime | None]:
    """delivered on 2xx; gone on 410 (the receiver asked us to stop); failed on GiveUp; otherwise retry
    with jittered exponential backoff, later if the receiver asks (Retry-After), until give-up time."""
    if isinstance(outcome, Result):
        if outcome.failure is None:
            return ("gone" if outcome.status_code == 410 else "delivered"), None
        outcome = outcome.failure
    backoff = Backoff(base_s=deps.settings.webhook_retry_base_s, cap_s=7200.0, factor=3.0)
    retry = runner.next_attempt(outcome, backoff, delivery.attempts + 1, now, delivery.give_up_at)
    return ("failed", None) if retry is None else ("pending", retry)


async def retry_now(deps: Deps, api_key_id: int, delivery_id: int) -> None:
    """Replay one delivery at once (whatever its state), with a fresh retry window."""
    now = deps.clock()
    async with deps.write() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.api_key_id != api_key_id:
            raise NotFound("Delivery not found")
        delivery.state, delivery.next_attempt_at = "pending", now
        delivery.give_up_at = max(delivery.give_up_at, now + timedelta(seconds=deps.settings.webhook_retry_for_s))
