"""Orchestration: submitting tasks and applying updates. Owns every transaction.

Callbacks and the sweeper both end in `apply_update`, the one idempotent way a task's
state changes. No transaction is ever open while an upstream HTTP call is in flight.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import copies, limits, throttle, webhooks
from app.db import queries
from app.db.loader import TaskStatus
from app.db.models import IdempotencyKey, StoredFile, Task, TaskEvent, WebhookDelivery
from app.db.outage import stale_if_error
from app.deps import Deps
from app.domain import Backoff, State, Update, states_before
from app.errors import Conflict, NotConfigured, NotFound, ProviderRejected, ProviderUnavailable, UpstreamRejected
from app.providers import LABELS, Provider
from app.providers.models import MODELS, Api, ModelSpec
from app.status_cache import CachedStatus
from app.storable import storable_update
from app.untrusted import unstorable
from app.validation import Submission
from app.watch import sleep_until_changed

log = logging.getLogger(__name__)

SUBMIT_BACKOFF = Backoff(base_s=2.0, cap_s=300.0)
UPSTREAM_URL_LIFETIME = timedelta(hours=24)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same or older news: nothing to do
    CONFLICT = "conflict"  # a different terminal result after the first one: kept in history only
    UNKNOWN_TASK = "unknown-task"
    MISMATCH = "mismatch"  # about another upstream task than the one this task is bound to: refused


def new_task_id() -> str:
    return "ih_" + secrets.token_urlsafe(18)


def callback_token(secret: str, task_id: str) -> str:
    """The per-task secret in a callback URL: derived, so nothing extra is stored."""
    digest = hmac.new(secret.encode(), f"kie-callback:{task_id}".encode(), hashlib.sha256).hexdigest()
    return digest[:40]


def callback_url(deps: Deps, task_id: str, api: Api) -> str | None:
    """Where the provider reports back; None for providers that must be polled."""
    if api.callback_route is None:
        return None
    token = callback_token(deps.settings.secret, task_id)
    return f"{deps.settings.public_base_url}/callbacks/{api.callback_route}/{task_id}/{token}"


def provider_for(deps: Deps, spec: ModelSpec) -> Provider:
    provider = deps.providers.get(spec.api.provider)
    if provider is None:
        raise NotConfigured(f"{LABELS[spec.api.provider]} API key not configured")
    return provider


def first_check_delay(deps: Deps, spec: ModelSpec) -> float:
    """Callback APIs are asked only once late; polled APIs are asked soon."""
    return deps.settings.stale_after_s if spec.api.callback_route else deps.settings.poll_interval_s


async def submit_task(
    deps: Deps, *, api_key_id: int, submission: Submission, idempotency_key: str | None = None
) -> str:
    """Store the task, then send it. With an Idempotency-Key, a repeat returns the first task."""
    provider_for(deps, submission.model)
    if submission.webhook_url:
        await webhooks.check_destination(
            submission.webhook_url, deps.settings.webhook_allow_private, deps.outbound.resolver
        )
    fingerprint = submission.fingerprint()
    if idempotency_key and (earlier := await idempotent_task(deps, api_key_id, idempotency_key, fingerprint)):
        return earlier
    task = new_task(deps, api_key_id, submission)
    try:
        async with deps.write() as session:
            await limits.enforce(session, api_key_id, task.created_at, task.credit_reserve)
            session.add(task)
            if idempotency_key:
                session.add(IdempotencyKey(**_key_row(api_key_id, idempotency_key, fingerprint, task)))
            queries.add_event(session, task, task.created_at, "submit", State.PENDING, "created")
    except IntegrityError:
        # A concurrent retry with the same key committed first: answer with its task.
        if idempotency_key and (earlier := await idempotent_task(deps, api_key_id, idempotency_key, fingerprint)):
            return earlier
        raise
    await send_task(deps, task)
    return task.id


def new_task(deps: Deps, api_key_id: int, submission: Submission) -> Task:
    now = deps.clock()
    return Task(
        id=new_task_id(),
        api_key_id=api_key_id,
        provider=submission.model.api.provider,
        model=submission.model.name,
        request=submission.payload,
        state=State.PENDING.value,
        image_urls=[],
        stored_images=[],
        credit_reserve=deps.settings.credit_estimate_per_image * submission.images_requested,
        webhook_url=submission.webhook_url,
        submit_attempts=0,
        check_attempts=0,
        # Keeps the sweeper off the task while this request sends it. If the process dies before
        # the create call returns, the sweeper sends it once this has passed (see unknown_outcome_hold).
        next_check_at=now + unknown_outcome_hold(deps),
        created_at=now,
        updated_at=now,
    )


def _key_row(api_key_id: int, key: str, fingerprint: str, task: Task) -> dict[str, object]:
    return {
        "api_key_id": api_key_id,
        "key": key,
        "request_hash": fingerprint,
        "task_id": task.id,
        "created_at": task.created_at,
    }


async def idempotent_task(deps: Deps, api_key_id: int, key: str, fingerprint: str) -> str | None:
    """The task an earlier request with this key made, or None; 409 if that request differed."""
    async with deps.sessions() as session:
        row = await queries.get_idempotency_key(session, api_key_id, key)
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise Conflict("Idempotency-Key was already used with a different request")
    return row.task_id


async def send_task(deps: Deps, task: Task) -> None:
    """Create the task upstream. Transient failures leave it pending for the sweeper;
    a definitive rejection fails it and raises UpstreamRejected."""
    spec = MODELS[task.model]
    provider = provider_for(deps, spec)
    if problem := unstorable(task.request):  # stored before requests were checked for this; can never be sent
        await update_task(
            deps, task.id, Update(State.FAIL, fail_code="invalid", fail_msg=f"Request {problem}"), "submit"
        )
        return
    slot = await throttle.take_slot(deps, spec.api.provider)
    if slot.free_at is not None:  # the provider's create window is full: wait in line, no attempt spent
        async with deps.write() as session:
            await queries.reschedule(session, task.id, slot.free_at)
        return
    started = deps.clock()
    try:
        upstream_id = await create_in_slot(deps, provider, spec, task, slot)
    except ProviderUnavailable as exc:
        await retry_send_later(deps, task, exc, started)
        return
    except ProviderRejected as exc:
        await update_task(deps, task.id, Update(State.FAIL, fail_code=str(exc.code), fail_msg=exc.message), "submit")
        raise UpstreamRejected(f"{provider.label} error: {exc.message}", provider.rejection_status(exc.code)) from None
    await record_created(deps, task, spec, upstream_id)


def unknown_outcome_hold(deps: Deps) -> timedelta:
    """How long a create that may have reached the provider is not repeated: until its callback,
    which carries imagehook's own task id, is late. Sending it again sooner could make (and charge)
    the task twice upstream."""
    return timedelta(seconds=max(deps.settings.stale_after_s, deps.settings.upstream_timeout_s + 5))


async def retry_send_later(deps: Deps, task: Task, exc: ProviderUnavailable, started: datetime) -> None:
    delay = max(SUBMIT_BACKOFF.delay(task.submit_attempts + 1), exc.retry_after or 0)
    if exc.maybe_created:
        delay = max(delay, (started + unknown_outcome_hold(deps) - deps.clock()).total_seconds())
    log.warning("creating %s upstream failed (%s); retrying in %.1fs", task.id, exc.message, delay)
    async with deps.write() as session:
        next_send = before_deadline(deps, task, delay)
        await queries.reschedule(session, task.id, next_send, submit_attempts=task.submit_attempts + 1)


async def record_created(deps: Deps, task: Task, spec: ModelSpec, upstream_id: str) -> None:
    now = deps.clock()
    async with deps.write() as session:
        next_check = before_deadline(deps, task, first_check_delay(deps, spec))
        bound = await queries.record_submission(session, task.id, upstream_id, now, next_check)
        if bound is not None:
            # An early callback bound another upstream task. The create answer is what the provider
            # said to imagehook itself, so it wins; a state that callback set stays (nothing leaves a
            # terminal state), and the disagreement is kept in the task's history.
            bound_id, state = bound
            log.warning("task %s: created upstream as %s, but a callback named %s", task.id, upstream_id, bound_id)
            detail = {"upstreamId": upstream_id, "boundUpstreamId": bound_id}
            queries.add_event(session, task, now, "submit", state, Outcome.CONFLICT, **detail)


async def create_in_slot(deps: Deps, provider: Provider, spec: ModelSpec, task: Task, slot: throttle.Slot) -> str:
    try:
        return await provider.create(spec, task.request, callback_url(deps, task.id, spec.api))
    finally:
        await throttle.mark_sent(deps, slot)


def before_deadline(deps: Deps, task: Task, delay_s: float) -> datetime:
    """Now + delay, but never past the moment the task times out."""
    deadline = task.created_at + timedelta(seconds=deps.settings.task_timeout_s)
    return min(deps.clock() + timedelta(seconds=delay_s), deadline)


async def apply_update(deps: Deps, session: AsyncSession, task_id: str, change: Update, source: str) -> Outcome:
    """Record what a provider said about a task (see apply_updates)."""
    (outcome,) = await apply_updates(deps, session, [(task_id, change, source)])
    return outcome


async def apply_updates(deps: Deps, session: AsyncSession, updates: Sequence[tuple[str, Update, str]]) -> list[Outcome]:
    """Record what providers said about tasks, in order. Idempotent, monotonic, first terminal wins.

    The tasks are read locked (FOR UPDATE on PostgreSQL; on SQLite a write from a stale read
    fails the transaction instead), so each decision holds until commit. In the same
    transaction: each task's history, and at a terminal state the webhook to send (the outbox)
    and the copies to make, so a crash can lose none of them. Whatever the number of updates,
    this is one query to read and one statement per table to write.
    """
    now = deps.clock()
    updates = [(task_id, storable_update(change), source) for task_id, change, source in updates]
    tasks = await queries.lock_tasks(session, {task_id for task_id, _, _ in updates})
    rows = NewRows()
    outcomes = [_apply(deps, rows, tasks.get(task_id), change, source, now) for task_id, change, source in updates]
    queries.mark_changed(session, rows.changed)
    for table, table_rows in ((TaskEvent, rows.events), (StoredFile, rows.copies), (WebhookDelivery, rows.webhooks)):
        await queries.insert_rows(session, table, table_rows)
    return outcomes


@dataclass
class NewRows:
    """What a batch of updates adds beside the tasks themselves, inserted a table at a time."""

    changed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    copies: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)


def _apply(deps: Deps, rows: NewRows, task: Task | None, change: Update, source: str, now: datetime) -> Outcome:
    if task is None:
        return Outcome.UNKNOWN_TASK
    if change.upstream_id and task.upstream_id and change.upstream_id != task.upstream_id:
        log.warning(
            "task %s is upstream %s; refusing an update about %s", task.id, task.upstream_id, change.upstream_id
        )
        return Outcome.MISMATCH
    if State(task.state) in states_before(change.state):
        outcome = Outcome.APPLIED
        queries.advance(task, change, now)
        if change.state is State.SUCCESS:
            rows.copies.extend(copies.copy_rows(task, now))
        if change.state.terminal and task.webhook_url:
            rows.webhooks.append(webhooks.delivery_row(task, now, deps.settings.webhook_retry_for_s))
        rows.changed.append(task.id)
    elif _conflicts(task, change):
        outcome = Outcome.CONFLICT
        log.warning("task %s is %s; ignoring a later %s from %s", task.id, task.state, change.state, source)
    else:
        return Outcome.DUPLICATE
    rows.events.append(queries.event_row(task, now, source, change.state, outcome, **_event_detail(change)))
    return outcome


async def update_task(deps: Deps, task_id: str, change: Update, source: str) -> Outcome:
    async with deps.write() as session:
        return await apply_update(deps, session, task_id, change, source)


def _conflicts(task: Task, change: Update) -> bool:
    if not change.state.terminal or not State(task.state).terminal:
        return False
    return task.state != change.state or tuple(task.image_urls) != change.image_urls


def _event_detail(change: Update) -> dict[str, object]:
    return {
        "imageUrls": list(change.image_urls),
        "failCode": change.fail_code,
        "failMsg": change.fail_msg,
        "costTime": change.cost_time_ms,
        "upstreamId": change.upstream_id,
    }


async def read_status(deps: Deps, api_key_id: int, task_id: str) -> CachedStatus:
    """The task's status object, as JSON: from the status cache, else from the database; while the
    database is unavailable, the last one this process knew (DatabaseUnavailable if it knew none)."""
    cached = deps.status_cache.get(task_id) or await stale_if_error(
        load_status(deps, task_id), lambda: deps.status_cache.last_known(task_id)
    )
    if cached.owner != api_key_id:
        raise NotFound("Task not found")  # the same answer as for no task at all
    return cached


async def load_status(deps: Deps, task_id: str) -> CachedStatus:
    epoch = deps.status_cache.epoch  # before the query: a change committed meanwhile voids what it reads
    row = await deps.loader.load(task_id)
    if row is None:
        raise NotFound("Task not found")
    body = encode_json(status_body(row, deps.settings.public_base_url))
    cached = CachedStatus(row.api_key_id, State(row.state).terminal, body)
    deps.status_cache.put(task_id, cached, epoch)
    return cached


def encode_json(content: object) -> bytes:
    """What Starlette's JSONResponse would send."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def wait_for_status(deps: Deps, *, api_key_id: int, task_id: str, wait_s: float) -> CachedStatus:
    """The task's status once terminal, or as it is after wait_s. Holds no connection while
    waiting, and each look is a status read: a thousand waiters cost what a thousand reads do."""
    deadline = asyncio.get_running_loop().time() + wait_s
    with deps.watch.watch(task_id) as changed:
        while True:
            status = await read_status(deps, api_key_id, task_id)
            remaining = deadline - asyncio.get_running_loop().time()
            if status.terminal or remaining <= 0:
                return status
            await sleep_until_changed(changed, remaining)


async def status_changes(
    deps: Deps, *, api_key_id: int, task_id: str, keepalive_s: float
) -> AsyncIterator[CachedStatus | None]:
    """Each new version of the task's status until it is terminal; None when keepalive_s passed quietly."""
    seen, quiet_since = None, asyncio.get_running_loop().time()
    status: CachedStatus | None = None
    with deps.watch.watch(task_id) as changed:
        while True:
            # With the database out, the stream stays on the last status it read, even once the cache dropped it.
            status = await stale_if_error(read_status(deps, api_key_id, task_id), lambda sent=status: sent)
            now = asyncio.get_running_loop().time()
            if status.body != seen:
                seen, quiet_since = status.body, now
                yield status
            elif now - quiet_since >= keepalive_s:
                quiet_since = now
                yield None
            if status.terminal:
                return
            await sleep_until_changed(changed, keepalive_s)


def status_body(task: Task | TaskStatus, public_base_url: str) -> dict[str, object]:
    """The task as clients see it. Each image is served from imagehook's own copy once it
    exists; until then it is the provider's URL, which expires (`expiresAt`)."""
    urls = image_urls(task, public_base_url) if task.state == State.SUCCESS else []
    return {
        "taskId": task.id,
        "state": task.state,
        "imageUrl": urls[0] if urls else None,
        "imageUrls": urls,
        "expiresAt": _upstream_expiry(task) if urls and len(task.stored_images) < len(urls) else None,
        "failMsg": task.fail_msg if task.state == State.FAIL else None,
        "costTime": task.cost_time_ms,
        "model": task.model,
        "createdAt": task.created_at.isoformat(),
        "updatedAt": task.updated_at.isoformat(),
    }


def image_urls(task: Task | TaskStatus, public_base_url: str) -> list[str]:
    stored = set(task.stored_images)
    return [
        f"{public_base_url}/api/images/{task.id}/files/{n}" if n in stored else url
        for n, url in enumerate(task.image_urls)
    ]


def _upstream_expiry(task: Task | TaskStatus) -> str:
    # Kie documents 24 hours in one place and 14 days in another: promise the shorter.
    return ((task.completed_at or task.updated_at) + UPSTREAM_URL_LIFETIME).isoformat()
