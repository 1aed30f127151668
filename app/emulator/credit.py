"""Kie's account credit query (facts section 6): GET /api/v1/chat/credit, the balance as `data`."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.emulator.store import store_of
from app.emulator.wire import KIE, kie


async def credit(request: Request) -> Response:
    store = store_of(request)
    store.calls["credit"] += 1
    if not KIE.authorized(request, store):
        return KIE.error(KIE.denied)
    return kie(200, "success", store.balance())


ROUTES = [Route("/api/v1/chat/credit", credit, methods=["GET"])]
