"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.db.migrate import current_revision
from app.deps import Deps
from app.errors import DatabaseUnavailable
from app.providers.base import Balance

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is at the migrations' head, until shutdown begins."""
    deps: Deps = request.state.deps
    if deps.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    head = request.state.schema_head
    try:
        current = await current_revision(deps.engine)
    except Exception as exc:  # whatever it is, a replica that cannot read its database is not ready
        log.warning("readiness check: database unreachable: %s", type(exc.__cause__ or exc).__name__)
        headers = {"Retry-After": str(DatabaseUnavailable.RETRY_AFTER_S)}
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503, headers=headers)
    if current != head:
        body = {"status": "unavailable", "database": "ok", "migration": current, "expected": head}
        return JSONResponse(body, status_code=503)
    balance = deps.balance.report(deps.providers.find(Balance), deps.clock())
    return JSONResponse({"status": "ready", "database": "ok", "migration": current, "kieBalance": balance})


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
