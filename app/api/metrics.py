"""GET /metrics: this process's Prometheus metrics (app/observe/metrics.py), in the text format.

Open unless METRICS_TOKEN is set; then `Authorization: Bearer <METRICS_TOKEN>` is required. The
backlog gauges describe the shared database: one query computes all three, at most once per
BACKLOG_TTL_S however often anyone scrapes.
"""

from __future__ import annotations

import hmac
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import false, func, or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.auth import bearer_key
from app.db.tables import StoredFile, WebhookDelivery
from app.deps import Deps
from app.errors import Unauthorized
from app.observe.metrics import BACKLOG, BACKLOG_TTL_S
from app.tasks import throttle
from app.tasks.sweeper import waiting_to_be_sent

_backlog_read_at = -BACKLOG_TTL_S


async def metrics(request: Request) -> Response:
    deps: Deps = request.state.deps
    token = deps.settings.metrics_token
    if token and not hmac.compare_digest((bearer_key(request) or "").encode(), token.encode()):
        raise Unauthorized("Missing or invalid metrics token")
    await refresh_backlog(deps)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def refresh_backlog(deps: Deps) -> None:
    global _backlog_read_at
    if time.monotonic() - _backlog_read_at < BACKLOG_TTL_S:
        return
    now = deps.clock()
    waiting = [waiting_to_be_sent(deps, provider, now) for provider in throttle.windows(deps)]
    counts = {
        "webhooks_due": select(func.count()).where(WebhookDelivery.next_attempt_at <= now),
        "copies_due": select(func.count()).where(StoredFile.next_attempt_at <= now),
        "create_slot": select(func.count()).where(or_(*waiting) if waiting else false()),
    }
    async with deps.sessions() as session:
        row = (await session.execute(select(*(query.scalar_subquery() for query in counts.values())))).one()
    for queue, count in zip(counts, row, strict=True):
        BACKLOG.labels(queue).set(count)
    _backlog_read_at = time.monotonic()


routes = [Route("/metrics", metrics, methods=["GET"])]
