"""Webhook deliveries of the caller's tasks: the attempt log, and replay."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import deliveries, listing
from app.api.images import owner_of
from app.errors import NotFound


async def list_deliveries(request: Request) -> JSONResponse:
    return JSONResponse(
        await listing.list_deliveries(request.state.deps, await owner_of(request), dict(request.query_params))
    )


async def retry_delivery(request: Request) -> JSONResponse:
    owner = await owner_of(request)
    raw_id = request.path_params["delivery_id"]
    if not raw_id.isdigit():
        raise NotFound("Delivery not found")
    await deliveries.retry_now(request.state.deps, owner, int(raw_id))
    return JSONResponse({"id": int(raw_id), "state": "pending"}, status_code=202)


routes = [
    Route("/api/webhooks/deliveries", list_deliveries, methods=["GET"]),
    Route("/api/webhooks/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
]
