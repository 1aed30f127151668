"""Submitting tasks: store once (idempotently), then send upstream within the create window.

No transaction is ever open while an upstream HTTP call is in flight: a task is stored and
committed first, sent outside any transaction, and its answer recorded in a new one.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from app import signing
from app.db import queries
from app.db.tables import IdempotencyKey, Task
from app.deps import Deps
from app.errors import Conflict, ProviderRejected, ProviderUnavailable, UpstreamRejected
from app.inbound.untrusted import unstorable
from app.outbox import webhooks
from app.providers.base import Provider
from app.providers.catalogue import MODELS, Api, ModelSpec
from app.tasks import limits, throttle
from app.tasks.domain import Backoff, State, Update, retry_at
from app.tasks.updates import Outcome, update_task
from app.tasks.validation import Submission

log = logging.getLogger(__name__)


SUBMIT_BACKOFF = Backoff(base_s=2.0, cap_s=300.0)


def new_task_id() -> str:
    return "ih_" + secrets.token_urlsafe(18)


def callback_token(secret: str, task_id: str) -> str:
    """The per-task secret in a callback URL: derived, so nothing extra is stored.

    The same for every provider's routes; its fixed prefix keeps the URLs already handed out valid."""
    return signing.digest(secret, "kie-callback", task_id)[:40]


def callback_url(deps: Deps, task_id: str, api: Api) -> str | None:
    """Where the provider reports back; None for providers that must be polled."""
    if api.callback_route is None:
        return None
    token = callback_token(deps.settings.secret, task_id)
    return f"{deps.settings.public_base_url}/callbacks/{api.callback_route}/{task_id}/{token}"


def provider_for(deps: Deps, spec: ModelSpec) -> Provider:
    """The model's provider; NotConfigured without its API key."""
    return deps.providers.named(spec.api.provider)


def first_check_delay(deps: Deps, spec: ModelSpec) -> float:
    """Callback APIs are asked only once late; polled APIs are asked soon."""
    return deps.settings.stale_after_s if spec.api.callback_route else deps.settings.poll_interval_s


async def submit_task(
    deps: Deps,
    *,
    api_key_id: int,
    submission: Submission,
    idempotency_key: str | None = None,
    cancel_after_s: float | None = None,
) -> str:
    """Store the task, then send it. With an Idempotency-Key, a repeat returns the first task. With
    cancel_after_s (Cancel-After), the task is canceled if it has not finished that long after now."""
    provider_for(deps, submission.model)
    if submission.webhook_url:
        await webhooks.check_destination(
            submission.webhook_url, deps.settings.webhook_allow_private, deps.outbound.resolver
        )
    fingerprint = submission.fingerprint()
    if idempotency_key and (earlier := await idempotent_task(deps, api_key_id, idempotency_key, fingerprint)):
        return earlier
    task = new_task(deps, api_key_id, submission, cancel_after_s)
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


async def check_submission(deps: Deps, api_key_id: int, submission: Submission) -> None:
    """What submit_task would refuse before storing anything (the provider's configuration, the key's limits),
    for callers that must send something upstream first, such as an edit's input files. Stores nothing;
    submit_task still decides, under the key's lock."""
    provider_for(deps, submission.model)
    async with deps.write() as session:
        await limits.enforce(session, api_key_id, deps.clock(), credit_reserve(deps, submission))


def credit_reserve(deps: Deps, submission: Submission) -> float:
    return deps.settings.credit_estimate_per_image * submission.images_requested


def new_task(deps: Deps, api_key_id: int, submission: Submission, cancel_after_s: float | None = None) -> Task:
    now = deps.clock()
    task = Task(
        id=new_task_id(),
        api_key_id=api_key_id,
        provider=submission.model.api.provider,
        model=submission.model.name,
        request=submission.payload,
        state=State.PENDING.value,
        image_urls=[],
        stored_images=[],
        credit_reserve=credit_reserve(deps, submission),
        webhook_url=submission.webhook_url,
        submit_attempts=0,
        check_attempts=0,
        cancel_at=None if cancel_after_s is None else now + timedelta(seconds=cancel_after_s),
        created_at=now,
        updated_at=now,
    )
    # Keeps the sweeper off the task while this request sends it. If the process dies before the create
    # call returns, the sweeper sends it once this has passed (see unknown_outcome_hold), or cancels it
    # at its deadline.
    task.next_check_at = min(now + unknown_outcome_hold(deps), deadline(deps, task))
    return task


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
    if not await still_to_send(deps, task.id):  # canceled since it was claimed: never sent
        return
    slot = await throttle.take_slot(deps, spec.api.provider)
    if slot.free_at is not None:  # the provider's create window is full: wait in line, no attempt spent
        async with deps.write() as session:
            await queries.reschedule(session, task.id, min(slot.free_at, deadline(deps, task)))
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
    wait_s = exc.retry_after
    if exc.maybe_created:  # the hold is a floor like the provider's own Retry-After
        wait_s = max(wait_s or 0, (started + unknown_outcome_hold(deps) - deps.clock()).total_seconds())
    attempt = task.submit_attempts + 1
    next_send = retry_before_deadline(deps, task, SUBMIT_BACKOFF, attempt, wait_s)
    log.warning(
        "creating %s upstream failed (%s); retrying in %.1fs",
        task.id,
        exc.message,
        (next_send - deps.clock()).total_seconds(),
    )
    async with deps.write() as session:
        await queries.reschedule(session, task.id, next_send, submit_attempts=attempt)


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
    return min(deps.clock() + timedelta(seconds=delay_s), deadline(deps, task))


def retry_before_deadline(
    deps: Deps, task: Task, backoff: Backoff, attempt: int, retry_after: float | None = None
) -> datetime:
    """When to make `attempt` (domain.retry_at), but never past the moment the task times out: the
    sweeper then times it out instead."""
    return retry_at(backoff, attempt, deps.clock(), deadline(deps, task), retry_after) or deadline(deps, task)


def deadline(deps: Deps, task: Task) -> datetime:
    """When the sweeper ends the task if nothing else has: it times out, or its Cancel-After passes."""
    timeout = task.created_at + timedelta(seconds=deps.settings.task_timeout_s)
    return timeout if task.cancel_at is None else min(timeout, task.cancel_at)


async def still_to_send(deps: Deps, task_id: str) -> bool:
    async with deps.sessions() as session:
        return await queries.is_unsent(session, task_id)
