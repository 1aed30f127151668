"""Sending due webhooks from the outbox, recording each attempt, and the deliveries API data."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app.db import queries
from app.db.tables import ApiKey, Task, WebhookAttempt, WebhookDelivery
from app.deps import Deps
from app.errors import NotFound
from app.inbound.untrusted import clean_text
from app.outbox.outbound import DestinationRefused
from app.outbox.webhooks import signed_request, signing_secrets
from app.providers.http import retry_after
from app.tasks.domain import Backoff
from app.tasks.status import status_body

log = logging.getLogger(__name__)

BATCH_SIZE = 20
KEPT_RESPONSE_CHARS = 2048  # enough to debug a receiver, never a way to fill our disk
CUT_SHORT = " [answer cut short]"
KEPT_RESPONSE_BYTES = 4 * KEPT_RESPONSE_CHARS  # read of an answer at most: UTF-8 takes up to 4 bytes a character


@dataclass(frozen=True)
class Result:
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: float | None = None
    permanent: bool = False  # no point retrying (the destination is refused)


async def deliver_due(deps: Deps, limit: int = BATCH_SIZE) -> Counter[str]:
    now = deps.clock()
    lease_until = now + timedelta(seconds=2 * deps.settings.webhook_timeout_s + 10)
    async with deps.write() as session:
        deliveries = await queries.claim(session, WebhookDelivery.next_attempt_at, now, lease_until, limit)
        key_ids = {delivery.api_key_id for delivery in deliveries}
        keys = {key.id: key for key in (await session.execute(select(ApiKey).where(ApiKey.id.in_(key_ids)))).scalars()}
        task_ids = {delivery.task_id for delivery in deliveries}
        tasks = {task.id: task for task in (await session.execute(select(Task).where(Task.id.in_(task_ids)))).scalars()}
    sends = (
        send(deps, delivery, keys[delivery.api_key_id], payload(deps, delivery, tasks.get(delivery.task_id)))
        for delivery in deliveries
    )
    return Counter(f"webhook_{outcome}" for outcome in await asyncio.gather(*sends))


def payload(deps: Deps, delivery: WebhookDelivery, task: Task | None) -> dict[str, Any]:
    """Rendered at the first attempt (by then the images are usually copied, so it carries
    imagehook's own URLs), then kept: every retry and replay sends the same bytes."""
    if delivery.payload or task is None:
        return delivery.payload
    return {"type": delivery.event_type, **status_body(task, deps.settings.public_base_url)}


async def send(deps: Deps, delivery: WebhookDelivery, key: ApiKey, body: dict[str, Any]) -> str:
    if deps.clock() >= delivery.give_up_at:  # e.g. a lease that ran out after the last allowed attempt
        await settle(deps, delivery, "failed", None, "retry window ended")
        return "failed"
    started = time.monotonic()
    result = await attempt(deps, delivery, key, body)
    duration_ms = round((time.monotonic() - started) * 1000)
    try:
        async with deps.write() as session:
            return await record(deps, session, delivery, body, result, duration_ms)
    except Exception:
        # The attempt happened: settle it anyway, or the receiver would get it again at every lease.
        log.exception("recording webhook attempt of delivery %s failed", delivery.id)
        state, next_attempt = next_step(deps, delivery, result, deps.clock())
        await settle(deps, delivery, state, next_attempt, "the attempt could not be recorded")
        return state


async def settle(deps: Deps, delivery: WebhookDelivery, state: str, next_attempt: datetime | None, error: str) -> None:
    """Move a delivery on without an attempt row."""
    values = {"state": state, "next_attempt_at": next_attempt, "attempts": delivery.attempts + 1, "last_error": error}
    async with deps.write() as session:
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
            return Result(error=_described(exc, f"no answer within {2 * timeout:g} s"))
        answer.cut_short = True
    except (DestinationRefused, httpx.InvalidURL, ValueError) as exc:
        # Never sendable: a bad IDNA host, say, or an address the policy refuses (checked as it connects).
        return Result(error=_described(exc), permanent=True)
    return Result(answer.status_code, None, answer.body, answer.retry_after)


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
    def body(self) -> str:
        """At most KEPT_RESPONSE_CHARS, the column's length, the mark of an answer cut short included."""
        mark = CUT_SHORT if self.cut_short else ""
        text = bytes(self.kept[:KEPT_RESPONSE_BYTES]).decode(self.encoding, errors="replace")
        return text[: KEPT_RESPONSE_CHARS - len(mark)] + mark


def _described(exc: BaseException, default: str = "") -> str:
    return f"{type(exc).__name__}: {str(exc) or default}"[:500]


async def record(
    deps: Deps, session: Any, delivery: WebhookDelivery, body: dict[str, Any], result: Result, duration_ms: int
) -> str:
    now = deps.clock()
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            at=now,
            status_code=result.status_code,
            # A receiver's answer is kept whatever it holds; a NUL in it must not lose the attempt.
            error=None if result.error is None else clean_text(result.error),
            response_body=None if result.response_body is None else clean_text(result.response_body),
            duration_ms=duration_ms,
        )
    )
    state, next_attempt = next_step(deps, delivery, result, now)
    values: dict[str, Any] = {
        "state": state,
        "payload": body,  # what the receiver was last sent
        "attempts": delivery.attempts + 1,
        "next_attempt_at": next_attempt,
        "last_status": result.status_code,
        "last_error": None if result.error is None else clean_text(result.error),
    }
    if state == "delivered":
        values["delivered_at"] = now
    await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values))
    return state


def next_step(deps: Deps, delivery: WebhookDelivery, result: Result, now: datetime) -> tuple[str, datetime | None]:
    """delivered on 2xx; gone on 410 (the receiver asked us to stop); otherwise retry with
    jittered exponential backoff, later if the receiver asks (Retry-After), until give-up time."""
    if result.status_code is not None and 200 <= result.status_code < 300:
        return "delivered", None
    if result.status_code == 410:
        return "gone", None
    if result.permanent:
        return "failed", None
    backoff = Backoff(base_s=deps.settings.webhook_retry_base_s, cap_s=7200.0, factor=3.0)
    delay = max(backoff.delay(delivery.attempts + 1), result.retry_after or 0)
    retry_at = now + timedelta(seconds=delay)
    if retry_at > delivery.give_up_at:
        return "failed", None
    return "pending", retry_at


async def retry_now(deps: Deps, api_key_id: int, delivery_id: int) -> None:
    """Replay one delivery at once (whatever its state), with a fresh retry window."""
    now = deps.clock()
    async with deps.write() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.api_key_id != api_key_id:
            raise NotFound("Delivery not found")
        delivery.state, delivery.next_attempt_at = "pending", now
        delivery.give_up_at = max(delivery.give_up_at, now + timedelta(seconds=deps.settings.webhook_retry_for_s))
