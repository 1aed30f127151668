"""Where providers deliver results: POST /callbacks/{api}/{taskId}/{token}.

Callbacks arrive in bursts of thousands, so the route also has a way in that skips the router and
the middleware stack (`CallbackShortcut`); whichever way a callback comes, the same endpoint answers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.body import read_body
from app.deps import Deps
from app.errors import NotFound
from app.tasks.inbox import receive_callback


async def provider_callback(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    route = request.path_params["api"]
    owner = deps.providers.for_callback_route(route)
    if owner is None:
        raise NotFound("Not Found")
    raw = await read_body(request, deps.settings.max_body_bytes)
    task_id, token = request.path_params["task_id"], request.path_params["token"]
    verdict = await receive_callback(deps, owner, route, task_id, token, request.headers, raw)
    if verdict.status != 200:
        return JSONResponse({"error": verdict.message}, status_code=verdict.status)
    return JSONResponse({"code": 200, "msg": "success"})


routes = [Route("/callbacks/{api}/{task_id}/{token}", provider_callback, methods=["POST"])]
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]


class CallbackShortcut:
    """Middleware: a request the callback route fully matches goes straight to its endpoint, its
    errors answered by the app's own handlers, as Starlette would; every other request goes on."""

    def __init__(self, app: ASGIApp, handlers: Mapping[type[Exception], ErrorHandler]) -> None:
        self.app, self.handlers = app, handlers
        (self.route,) = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match, child_scope = self.route.matches(scope)
        if match is not Match.FULL:
            return await self.app(scope, receive, send)
        scope.update(child_scope)  # path_params and endpoint, as the router sets them
        request = Request(scope, receive)
        try:
            response: Response = await provider_callback(request)
        except Exception as exc:
            response = await self._handler(exc)(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> ErrorHandler:
        return next(self.handlers[kind] for kind in type(exc).__mro__ if kind in self.handlers)
