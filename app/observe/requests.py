"""The outermost layer of every HTTP request: its id, its duration histogram, its access log line.

The id is the client's `X-Request-ID` if it is sane, else a new one; it is sent back in the
response's `X-Request-ID` and carried by every log line the request causes. The route is its
template (`/callbacks/{api}/{task_id}/{token}`), never the path: callback paths carry tokens.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observe import metrics
from app.observe.logs import KEY_ID, REQUEST_ID, request_id

access = logging.getLogger("imagehook.access")
UNMATCHED = "unmatched"


class Observed:
    def __init__(self, app: ASGIApp, access_log: bool) -> None:
        self.app, self.access_log = app, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        rid = request_id(given)
        request_token, key_token = REQUEST_ID.set(rid), KEY_ID.set(None)
        header = (b"x-request-id", rid.encode())
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            record(scope, status, time.perf_counter() - started, self.access_log)
            REQUEST_ID.reset(request_token)
            KEY_ID.reset(key_token)


def record(scope: Scope, status: int, elapsed_s: float, access_log: bool) -> None:
    """The request's duration in the histogram, and its access line if ACCESS_LOG is on."""
    route = getattr(scope.get("route"), "path", UNMATCHED)
    metrics.labelled(metrics.REQUEST_DURATION, route, scope["method"], str(status)).observe(elapsed_s)
    if access_log and access.isEnabledFor(logging.INFO):
        access.info(
            "%s %s %d %.1f ms",
            scope["method"],
            route,
            status,
            elapsed_s * 1000,
            extra={"method": scope["method"], "route": route, "status": status, "duration_ms": elapsed_s * 1000},
        )
