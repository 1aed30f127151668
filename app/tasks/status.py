"""A task's status as a client sees it: read (cached), waited for, streamed, and its JSON body."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
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
# A queued task's place moves as others are sent, which changes nothing of its own: its event stream
# looks again this often.
QUEUE_STREAM_POLL_S = 1.0


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
    else:
        metrics.CACHE_MISSES.inc()
        cached = await stale_if_error(load_status(deps, task_id), lambda: deps.status_cache.last_known(task_id))
    return await placed(deps, task_id, cached)


async def load_status(deps: Deps, task_id: str) -> CachedStatus:
    epoch = deps.status_cache.epoch  # before the query: a change committed meanwhile voids what it reads
    asked_at = time.monotonic()
    row = await deps.loader.load(task_id)
    if row is None:
        metrics.NOT_FOUND.inc()
        raise NotFound("Task not found")
    content, servable_until = client_status(row, deps.settings, deps.clock().timestamp())
    line = waiting_line(deps, row)
    cached = CachedStatus(row.api_key_id, State(row.state).terminal, encode_json(content), servable_until, line)
    deps.status_cache.put(task_id, cached, epoch)
    if line is not None:  # a line read before the task was may not hold it: one begun since does
        await deps.queue_lines.get(line, line_reader(deps, line), begun_after=asked_at)
    return cached


def waiting_line(deps: Deps, row: TaskStatus) -> str | None:
    """The provider whose create window the task waits for a place in, if it may be waiting in one."""
    spec = MODELS.get(row.model)
    if row.upstream_id is not None or row.state != State.PENDING or spec is None:
        return None
    return spec.api.provider if throttle.limit_for(deps, spec.api.provider) is not None else None


def line_reader(deps: Deps, provider: str) -> Callable[[], Awaitable[throttle.Line]]:
    async def read_line() -> throttle.Line:
        limit = throttle.limit_for(deps, provider)
        assert limit is not None  # waiting_line found one; a provider's window is set at start-up
        async with deps.engine.connect() as connection:
            return await throttle.read_line(connection, provider, limit, deps.clock())

    return read_line


def with_place(deps: Deps, task_id: str, cached: CachedStatus) -> CachedStatus | None:
    """The status with the task's place in line (queuePosition, estimatedStartAt) if it waits in one,
    counted in the line read at hand: every read of a queued task shares one read of its line, about
    QUEUE_LINE_S old (read again in the background). None if that line cannot tell: it is not read
    yet, or the task is further back than it holds."""
    if cached.line is None:
        return cached
    line = deps.queue_lines.peek(cached.line, line_reader(deps, cached.line))
    if line is None:
        return None
    place = line.place(task_id, deps.clock())
    if place is None:
        return cached if line.whole else None  # in a whole line, not there means sent (or finished) since
    return spliced(cached, place)


async def placed(deps: Deps, task_id: str, cached: CachedStatus) -> CachedStatus:
    """with_place, reading the line (or for a task far back, counting its place) where it cannot tell."""
    found = with_place(deps, task_id, cached)
    if found is not None:
        return found
    assert cached.line is not None  # with_place tells every status that waits in no line
    line = await deps.queue_lines.get(cached.line, line_reader(deps, cached.line))
    place = line.place(task_id, deps.clock())
    if place is None and not line.whole:
        async with deps.sessions() as session:
            place = await throttle.place_in_line(session, cached.line, line.limit, task_id, deps.clock())
    return cached if place is None else spliced(cached, place)


def spliced(cached: CachedStatus, place: throttle.Place) -> CachedStatus:
    """The cached body (compact JSON, an object) with the place's two fields added at its end, as
    encode_json writes them: an integer, and an ISO timestamp, which is ASCII that needs no escape."""
    fields = b',"queuePosition":%d,"estimatedStartAt":"%s"}' % (place.position, place.starts_at.isoformat().encode())
    return replace(cached, body=cached.body[:-1] + fields)


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
            # A status that moves without its row changing (a place in line, signed URLs that lapse) is
            # looked at again as it does.
            lapses_in = status.servable_until - deps.clock().timestamp()
            wake_s = min(keepalive_s, max(lapses_in, QUEUE_STREAM_POLL_S))
            await sleep_until_changed(changed, wake_s if status.line is None else QUEUE_STREAM_POLL_S)


def status_body(task: Task | TaskStatus, public_base_url: str) -> dict[str, object]:
    """The task as clients see it. Each image is served from imagehook's own copy once it
    exists; until then it is the provider's URL, which expires (`expiresAt`). A task waiting for a
    place in its provider's create window also says where it stands, as it is served (with_place)."""
    urls = image_urls(task, public_base_url) if task.state == State.SUCCESS else []
    failed = task.state == State.FAIL
    return {
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


def client_status(task: Task | TaskStatus, settings: Settings, now: float) -> tuple[dict[str, object], float]:
    """The status object a client reads, less any place in line: status_body and its signed links; and
    until when it may be served (Unix time): while its URLs have their promised lifetime left."""
    signed, servable_until = signed_links(task, settings, now)
    return status_body(task, settings.public_base_url) | signed, servable_until


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
