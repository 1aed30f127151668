"""Orchestration: submitting tasks and applying updates. Owns every transaction.

Callbacks and the sweeper both end in `apply_update`, the one idempotent way a task's
state changes. No transaction is ever open while an upstream HTTP call is in flight.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import queries
from app.db.models import Task
from app.deps import Deps
from app.domain import Backoff, State, Update
from app.errors import NotConfigured, NotFound, ProviderRejected, ProviderUnavailable, UpstreamRejected
from app.providers import LABELS, Provider
from app.providers.models import MODELS, Api, ModelSpec
from app.validation import Submission

log = logging.getLogger(__name__)

SUBMIT_BACKOFF = Backoff(base_s=2.0, cap_s=300.0)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same or older news: nothing to do
    CONFLICT = "conflict"  # a different terminal result after the first one: kept in history only
    UNKNOWN_TASK = "unknown-task"


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


async def submit_task(deps: Deps, *, api_key_id: int, submission: Submission) -> str:
    provider_for(deps, submission.model)
    now = deps.clock()
    task = Task(
        id=new_task_id(),
        api_key_id=api_key_id,
        provider=submission.model.api.provider,
        model=submission.model.name,
        request=submission.payload,
        state=State.PENDING.value,
        image_urls=[],
        submit_attempts=0,
        check_attempts=0,
        # Keeps the sweeper off the task while this request sends it; if the process dies
        # before createTask returns, the sweeper sends it once this has passed.
        next_check_at=now + timedelta(seconds=deps.settings.upstream_timeout_s + 5),
        created_at=now,
        updated_at=now,
    )
    async with deps.sessions.begin() as session:
        session.add(task)
        queries.add_event(session, task.id, now, "submit", State.PENDING, "created")
    await send_task(deps, task)
    return task.id


async def send_task(deps: Deps, task: Task) -> None:
    """Create the task upstream. Transient failures leave it pending for the sweeper;
    a definitive rejection fails it and raises UpstreamRejected."""
    spec = MODELS[task.model]
    provider = provider_for(deps, spec)
    try:
        upstream_id = await provider.create(spec, task.request, callback_url(deps, task.id, spec.api))
    except ProviderUnavailable as exc:
        delay = max(SUBMIT_BACKOFF.delay(task.submit_attempts + 1), exc.retry_after or 0)
        log.warning("creating %s upstream failed (%s); retrying in %.1fs", task.id, exc.message, delay)
        async with deps.sessions.begin() as session:
            await queries.reschedule(
                session, task.id, before_deadline(deps, task, delay), submit_attempts=task.submit_attempts + 1
            )
        return
    except ProviderRejected as exc:
        await update_task(deps, task.id, Update(State.FAIL, fail_code=str(exc.code), fail_msg=exc.message), "submit")
        raise UpstreamRejected(f"{provider.label} error: {exc.message}", provider.rejection_status(exc.code)) from None
    now = deps.clock()
    async with deps.sessions.begin() as session:
        next_check = before_deadline(deps, task, first_check_delay(deps, spec))
        await queries.record_submission(session, task.id, upstream_id, now, next_check)


def before_deadline(deps: Deps, task: Task, delay_s: float) -> datetime:
    """Now + delay, but never past the moment the task times out."""
    deadline = task.created_at + timedelta(seconds=deps.settings.task_timeout_s)
    return min(deps.clock() + timedelta(seconds=delay_s), deadline)


async def apply_update(session: AsyncSession, task_id: str, change: Update, source: str, now: datetime) -> Outcome:
    """Record what a provider said about a task. Idempotent, monotonic, first terminal wins."""
    if await queries.advance_task(session, task_id, change, now):
        queries.add_event(session, task_id, now, source, change.state, Outcome.APPLIED, **_event_detail(change))
        return Outcome.APPLIED
    task = await queries.get_task(session, task_id)
    if task is None:
        return Outcome.UNKNOWN_TASK
    if _conflicts(task, change):
        log.warning("task %s is %s; ignoring a later %s from %s", task_id, task.state, change.state, source)
        queries.add_event(session, task_id, now, source, change.state, Outcome.CONFLICT, **_event_detail(change))
        return Outcome.CONFLICT
    return Outcome.DUPLICATE


async def update_task(deps: Deps, task_id: str, change: Update, source: str) -> Outcome:
    async with deps.sessions.begin() as session:
        return await apply_update(session, task_id, change, source, deps.clock())


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


async def get_status(deps: Deps, *, api_key_id: int, task_id: str) -> dict[str, object]:
    async with deps.sessions() as session:
        task = await queries.get_task(session, task_id, api_key_id)
    if task is None:
        raise NotFound("Task not found")
    return status_body(task)


def status_body(task: Task) -> dict[str, object]:
    success = task.state == State.SUCCESS
    return {
        "taskId": task.id,
        "state": task.state,
        "imageUrl": task.image_urls[0] if success and task.image_urls else None,
        "imageUrls": list(task.image_urls) if success else [],
        "failMsg": task.fail_msg if task.state == State.FAIL else None,
        "costTime": task.cost_time_ms,
        "model": task.model,
        "createdAt": task.created_at.isoformat(),
        "updatedAt": task.updated_at.isoformat(),
    }
