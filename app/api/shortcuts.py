"""Two ways past the router, for the requests that come by the thousand: provider callbacks, and
status reads the caches can answer.

Starlette's router, its middleware layers and its Request and Response objects cost more than
anything either request does itself. A callback the callback route fully matches goes straight to
its endpoint, its errors answered by the app's own handlers. A status read whose key and task
status are both cached (`GET /api/images/status?taskId=ID` with `Authorization: Bearer`, nothing
else in the query) is answered from memory with the very bytes the route would send. Everything
else, including every read the caches cannot answer, goes on to the router as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import callbacks, images
from app.api.auth import bearer_credentials
from app.deps import Deps
from app.keys import hash_key
from app.observe.logs import KEY_ID
from app.observe.metrics import CACHE_HITS

ErrorHandler = Callable[[Request, Any], Awaitable[Response]]
STATUS_PATH = "/api/images/status"
# `taskId=` and a task id's characters only: no other parameter, nothing percent-encoded.
PLAIN_STATUS_QUERY = re.compile(rb"taskId=([A-Za-z0-9_-]{1,40})")


class Shortcuts:
    def __init__(self, app: ASGIApp, handlers: Mapping[type[Exception], ErrorHandler]) -> None:
        self.app, self.handlers = app, handlers
        (self.callback_route,) = callbacks.routes
        self.status_route = next(route for route in images.routes if getattr(route, "path", None) == STATUS_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            if scope["method"] == "GET" and scope["path"] == STATUS_PATH:
                body = cached_status(scope["state"]["deps"], scope)
                if body is not None:
                    scope["route"] = self.status_route
                    return await send_json(send, body)
            elif scope["method"] == "POST":
                match, child_scope = self.callback_route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)  # path_params and endpoint, as the router sets them
                    scope["route"] = self.callback_route
                    return await self.callback(scope, receive, send)
        await self.app(scope, receive, send)

    async def callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response: Response = await callbacks.provider_callback(request)
        except Exception as exc:
            handler = next(self.handlers[kind] for kind in type(exc).__mro__ if kind in self.handlers)
            response = await handler(request, exc)
        await response(scope, receive, send)


def cached_status(deps: Deps, scope: Scope) -> bytes | None:
    """The status body the route would answer with, if the key and the task's status are cached."""
    query = PLAIN_STATUS_QUERY.fullmatch(scope["query_string"])
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    if query is None or authorization is None:
        return None
    key = bearer_credentials(authorization.decode("latin-1"))
    owner = deps.keys.get(hash_key(key)) if key else None
    status = deps.status_cache.get(query.group(1).decode()) if owner is not None else None
    if status is None or status.owner != owner:
        return None
    KEY_ID.set(owner)
    CACHE_HITS.inc()
    return status.body


async def send_json(send: Send, body: bytes) -> None:
    """A 200 with the headers Starlette's Response(body, media_type="application/json") sends, in its order."""
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
