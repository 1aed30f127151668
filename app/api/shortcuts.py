"""Two ways past the router and the middleware stack, for the requests that come by the thousand:
provider callbacks, and status reads the caches can answer. Both are taken by the app itself,
before anything else (app/main.py).

Starlette's router, its middleware layers and its Request and Response objects cost more than
anything either request does itself. A callback the callback route fully matches (POST, no NUL
anywhere a NUL is refused) goes straight to its endpoint, wrapped only in what the stack would
give it: the request's observation (`Observed`) and the app's own error handlers (`Handled`). A
status read whose key and task status are both cached (`GET /api/images/status?taskId=ID` with
`Authorization: Bearer`, nothing else in the query, no NUL in any header) is answered from
memory, with the very bytes and headers the route and its middleware would send, and observed
as they would observe it; one they cannot answer goes straight to the route's own endpoint,
wrapped as a callback is. Everything else goes on to the stack and the router as before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import callbacks, images
from app.api.auth import bearer_credentials
from app.api.guard import nul_in
from app.deps import Deps
from app.keys import hash_key
from app.observe.logs import KEY_ID, REQUEST_ID, request_id
from app.observe.metrics import CACHE_HITS
from app.observe.requests import Observed, record
from app.tasks.status import with_place

ErrorHandler = Callable[[Request, Any], Awaitable[Response]]
STATUS_PATH = "/api/images/status"
# `taskId=` and a task id's characters only: no other parameter, nothing percent-encoded.
PLAIN_STATUS_QUERY = re.compile(rb"taskId=([A-Za-z0-9_-]{1,40})")
(CALLBACK_ROUTE,) = callbacks.routes


class Handled:
    """An endpoint whose exceptions are answered by the app's handlers, as ExceptionMiddleware would."""

    def __init__(self, app: ASGIApp, handlers: Mapping[type[Exception], ErrorHandler]) -> None:
        self.app, self.handlers = app, handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            request = Request(scope, receive)
            handler = next(self.handlers[kind] for kind in type(exc).__mro__ if kind in self.handlers)
            response = await handler(request, exc)
            await response(scope, receive, send)


class RequestEndpoint:
    """A route's request -> response endpoint as an ASGI app. Starlette's own (`Route.app`, from
    `request_response`) also wraps every call in its exception plumbing, which `Handled` already
    does here: cold status reads ran at 0.30–0.32 of bare through it, 0.33–0.36 through this."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def callback_lane(handlers: Mapping[type[Exception], ErrorHandler], access_log: bool) -> ASGIApp:
    """The callback endpoint with what the middleware stack would have wrapped it in."""
    return Observed(Handled(callbacks.provider_callback, handlers), access_log=access_log)


def status_lane(handlers: Mapping[type[Exception], ErrorHandler], access_log: bool) -> ASGIApp:
    """The status route's endpoint with what the middleware stack would have wrapped it in."""
    return Observed(Handled(RequestEndpoint(STATUS_ROUTE.endpoint), handlers), access_log=access_log)


def is_plain_callback(scope: Scope) -> bool:
    """A callback request the callback lane answers as the stack would, its path parameters set as
    the router sets them."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return False
    matched = CALLBACK_ROUTE.path_regex.match(scope["path"])
    if matched is None or nul_in(scope):  # refused by RefuseNul, down the stack
        return False
    scope["path_params"] = matched.groupdict()  # every parameter is a plain string
    scope["route"], scope["endpoint"] = CALLBACK_ROUTE, CALLBACK_ROUTE.endpoint
    return True


STATUS_ROUTE = next(route for route in images.routes if getattr(route, "path", None) == STATUS_PATH)


def is_status_get(scope: Scope) -> bool:
    """GET of the status route's path itself (no root path the router would strip first)."""
    return (
        scope["type"] == "http"
        and scope["method"] == "GET"
        and scope["path"] == STATUS_PATH
        and not scope.get("root_path")
    )


def is_plain_status_read(scope: Scope) -> bool:
    """`GET /api/images/status?taskId=ID`, nothing else in the query and no NUL anywhere a NUL is
    refused: a read the status lane answers as the stack would, its route set as the router sets it."""
    if not is_status_get(scope) or PLAIN_STATUS_QUERY.fullmatch(scope["query_string"]) is None or nul_in(scope):
        return False
    scope["path_params"], scope["route"], scope["endpoint"] = {}, STATUS_ROUTE, STATUS_ROUTE.endpoint
    return True


async def answered_from_cache(scope: Scope, send: Send) -> bool:
    """Answer a status read from the caches if they can: True if answered, False to pass it on."""
    if not is_status_get(scope):
        return False
    started = time.perf_counter()
    authorization = given_id = None
    for name, value in scope["headers"]:
        if b"\x00" in value:
            return False  # refused by RefuseNul, down the stack
        if name == b"authorization":
            authorization = value
        elif name == b"x-request-id":
            given_id = value
    deps: Deps = scope["state"]["deps"]
    found = cached_status(deps, scope["query_string"], authorization)
    if found is None:
        return False
    owner, body = found
    rid = request_id(given_id)
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"x-request-id", rid.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    scope["route"] = STATUS_ROUTE
    if deps.settings.access_log:  # what the access line names, as Observed would have set them
        REQUEST_ID.set(rid)
        KEY_ID.set(owner)
    record(scope, 200, time.perf_counter() - started, deps.settings.access_log)
    return True


def cached_status(deps: Deps, query_string: bytes, authorization: bytes | None) -> tuple[int, bytes] | None:
    """(owner, the status body the route would answer with), if the key and the task's status are cached."""
    query = PLAIN_STATUS_QUERY.fullmatch(query_string)
    if query is None or authorization is None:
        return None
    key = bearer_credentials(authorization.decode("latin-1"))
    owner = deps.keys.get(hash_key(key)) if key else None
    task_id = query.group(1).decode()
    status = deps.status_cache.get(task_id) if owner is not None else None
    if status is None or status.owner != owner:
        return None
    status = with_place(deps, task_id, status)
    if status is None:  # a queued task whose place the line at hand cannot tell: the route finds it
        return None
    CACHE_HITS.inc()
    return owner, status.body
