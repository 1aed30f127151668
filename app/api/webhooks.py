"""Webhook deliveries of the caller's tasks: the attempt log, and replay."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.auth import owner_of
from app.errors import NotFound
from app.inbound import url_values as query
from app.outbox import deliveries
from app.reads import listing


async def list_deliveries(request: Request) -> JSONResponse:
    return JSONResponse(
        await listing.list_deliveries(request.state.deps, await owner_of(request), dict(request.query_params))
    )


async def retry_delivery(request: Request) -> JSONResponse:
    owner = await owner_of(request)
    delivery_id = query.integer(request.path_params["delivery_id"], low=1)
    if delivery_id is None:  # no delivery has such an id
        raise NotFound("Delivery not found")
    await deliveries.retry_now(request.state.deps, owner, delivery_id)
    return JSONResponse({"id": delivery_id, "state": "pending"}, status_code=202)


routes = [
    Route("/api/webhooks/deliveries", list_deliveries, methods=["GET"]),
    Route("/api/webhooks/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
]
