"""A task's status as a client sees it: read (cached), waited for, streamed, and its JSON body."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from app.db.outage import stale_if_error
from app.db.tables import Task
from app.deps import Deps
from app.errors import NotFound
from app.observe import metrics
from app.providers.catalogue import MODELS
from app.reads.loader import TaskStatus
from app.reads.status_cache import CachedStatus
from app.reads.watch import sleep_until_changed
from app.settings import Settings
from app.tasks import links, throttle
from app.tasks.domain import State

log = logging.getLogger(__name__)


UPSTREAM_URL_LIFETIME = timedelta(hours=24)
# A queued task's place moves as others are sent, which changes nothing of its own: its status is
# cached for this long at most, and its event stream looks again as often.
QUEUED_STATUS_TTL_S = 1.0


async def read_status(deps: Deps, api_key_id: int, task_id: str) -> CachedStatus:
    """The task's status object, as JSON, if the task is api_key_id's (see current_status)."""
    cached = await current_status(deps, task_id)
    if cached.owner != api_key_id:
        metrics.NOT_FOUND.inc()
        raise NotFound("Task not found")  # the same answer as for no task at all
    return cached


async def current_status(deps: Deps, task_id: str) -> CachedStatus:
    """The task's status object, whoever owns it: from the status cache, else from the database; while
    the database is unavailable, the last one this process knew (DatabaseUnavailable if it knew none)."""
    cached = deps.status_cache.get(task_id)
    if cached is not None:
        metrics.CACHE_HITS.inc()
        return cached
    metrics.CACHE_MISSES.inc()
    return await stale_if_error(load_status(deps, task_id), lambda: deps.status_cache.last_known(task_id))


async def load_status(deps: Deps, task_id: str) -> CachedStatus:
    epoch = deps.status_cache.epoch  # before the query: a change committed meanwhile voids what it reads
    row = await deps.loader.load(task_id)
    if row is None:
        metrics.NOT_FOUND.inc()
        raise NotFound("Task not found")
    place = await place_in_line(deps, row)
    content, servable_until = client_status(row, deps.settings, deps.clock().timestamp(), place)
    cached = CachedStatus(row.api_key_id, State(row.state).terminal, encode_json(content), servable_until)
    deps.status_cache.put(task_id, cached, epoch)
    return cached


async def place_in_line(deps: Deps, row: TaskStatus) -> throttle.Place | None:
    """Where a task waiting for a place in its provider's create window stands; None for any other."""
    spec = MODELS.get(row.model)
    if row.upstream_id is not None or row.state != State.PENDING or spec is None:
        return None
    limit = throttle.limit_for(deps, spec.api.provider)
    if limit is None:
        return None
    async with deps.sessions() as session:
        return await throttle.place_in_line(session, spec.api.provider, limit, row.id, deps.clock())


def encode_json(content: object) -> bytes:
    """What Starlette's JSONResponse would send."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def wait_for_status(deps: Deps, *, api_key_id: int, task_id: str, wait_s: float) -> CachedStatus:
    """The task's status once terminal, or as it is after wait_s (or when the process starts
    shutting down). Holds no connection while waiting, and each look is a status read: a
    thousand waiters cost what a thousand reads do."""
    deadline = asyncio.get_running_loop().time() + wait_s
    with deps.watch.watch(task_id) as changed, metrics.LONG_POLLS.track_inprogress():
        while True:
            status = await read_status(deps, api_key_id, task_id)
            remaining = deadline - asyncio.get_running_loop().time()
            if status.terminal or remaining <= 0 or deps.watch.draining:
                return status
            await sleep_until_changed(changed, remaining)


async def status_changes(
    deps: Deps, *, api_key_id: int, task_id: str, keepalive_s: float
) -> AsyncIterator[CachedStatus | None]:
    """Each new version of the task's status until it is terminal; None when keepalive_s passed quietly."""
    seen, quiet_since = None, asyncio.get_running_loop().time()
    status: CachedStatus | None = None
    with deps.watch.watch(task_id) as changed, metrics.EVENT_STREAMS.track_inprogress():
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
            if status.terminal or deps.watch.draining:  # shutting down: the client reconnects elsewhere
                return
            # A status served only briefly (a place in line) is looked at again as soon as it lapses.
            lapses_in = status.servable_until - deps.clock().timestamp()
            await sleep_until_changed(changed, min(keepalive_s, max(lapses_in, QUEUED_STATUS_TTL_S)))


def status_body(
    task: Task | TaskStatus, public_base_url: str, place: throttle.Place | None = None
) -> dict[str, object]:
    """The task as clients see it. Each image is served from imagehook's own copy once it
    exists; until then it is the provider's URL, which expires (`expiresAt`). A task waiting for a
    place in its provider's create window also says where it stands (`place`)."""
    urls = image_urls(task, public_base_url) if task.state == State.SUCCESS else []
    failed = task.state == State.FAIL
    body: dict[str, object] = {
        "taskId": task.id,
        "state": task.state,
        "imageUrl": urls[0] if urls else None,
        "imageUrls": urls,
        "expiresAt": _upstream_expiry(task) if urls and len(task.stored_images) < len(urls) else None,
        "failMsg": task.fail_msg if failed else None,
        "failCode": task.fail_code if failed else None,
        "costTime": task.cost_time_ms,
        "model": task.model,
        "createdAt": task.created_at.isoformat(),
        "updatedAt": task.updated_at.isoformat(),
    }
    if place is not None:
        body |= {"queuePosition": place.position, "estimatedStartAt": place.starts_at.isoformat()}
    return body


def client_status(
    task: Task | TaskStatus, settings: Settings, now: float, place: throttle.Place | None = None
) -> tuple[dict[str, object], float]:
    """The status object a client reads: status_body and its signed links; and until when it may be
    served (Unix time): while its URLs have their promised lifetime left, and for a task in line for
    a create slot, QUEUED_STATUS_TTL_S, as its place moves without its row changing."""
    signed, servable_until = signed_links(task, settings, now)
    if place is not None:
        servable_until = min(servable_until, now + QUEUED_STATUS_TTL_S)
    return status_body(task, settings.public_base_url, place) | signed, servable_until


def signed_links(task: Task | TaskStatus, settings: Settings, now: float) -> tuple[dict[str, object], float]:
    """`signedImageUrls`, the images as `imageUrls` has them, imagehook's copies with a token that
    lets a browser fetch them without a key (the provider's URLs need none), and when those tokens
    expire; and until when a body carrying them may be served (app/tasks/links.py)."""
    urls = image_urls(task, settings.public_base_url) if task.state == State.SUCCESS else []
    stored = set(task.stored_images).intersection(range(len(urls)))
    if not stored:
        return {"signedImageUrls": urls, "signedUrlsExpireAt": None}, math.inf
    ttl_s = settings.signed_url_ttl_s
    expires = links.signing_expiry(now, ttl_s)
    for n in stored:
        urls[n] += "?token=" + links.file_token(settings.secret, task.id, n, expires)
    signed = {"signedImageUrls": urls, "signedUrlsExpireAt": datetime.fromtimestamp(expires, UTC).isoformat()}
    return signed, links.servable_until(expires, ttl_s)


def image_urls(task: Task | TaskStatus, public_base_url: str) -> list[str]:
    stored = set(task.stored_images)
    return [
        f"{public_base_url}/api/images/{task.id}/files/{n}" if n in stored else url
        for n, url in enumerate(task.image_urls)
    ]


def _upstream_expiry(task: Task | TaskStatus) -> str:
    # Kie documents 24 hours in one place and 14 days in another: promise the shorter.
    return ((task.completed_at or task.updated_at) + UPSTREAM_URL_LIFETIME).isoformat()
