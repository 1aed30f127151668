"""GET /api/usage: the caller's tasks and credits, by model or by day."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.auth import owner_of
from app.reads import usage


async def get_usage(request: Request) -> JSONResponse:
    owner = await owner_of(request)
    return JSONResponse(await usage.summarize(request.state.deps, dict(request.query_params), owner))


routes = [Route("/api/usage", get_usage, methods=["GET"])]
