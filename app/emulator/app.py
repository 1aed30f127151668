"""The emulator app: every API family's routes, result files, and the /emulator/* control endpoints."""

from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.emulator import credit, files, flux, gpt4o, kvid, market, uploads
from app.emulator.faults import Faults
from app.emulator.jobs import TERMINAL
from app.emulator.store import Emulator, store_of


async def faults_endpoint(request: Request) -> Response:
    store = store_of(request)
    if request.method == "POST":
        try:
            store.set_faults(Faults.from_dict(await request.json()))
        except ValueError as exc:  # also invalid JSON: JSONDecodeError is a ValueError
            return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(store.faults.to_dict())


async def reset(request: Request) -> Response:
    store_of(request).reset()
    return JSONResponse({"reset": True})


async def calls(request: Request) -> Response:
    return JSONResponse(store_of(request).calls)


async def tasks(request: Request) -> Response:
    store = store_of(request)
    return JSONResponse([job.summary(store.clock()) for job in store.jobs.values()])


async def redeliver(request: Request) -> Response:
    store = store_of(request)
    job = store.jobs.get(request.path_params["task_id"])
    if job is None:
        return JSONResponse({"error": "task not found"}, status_code=404)
    if not job.sends_callbacks:
        return JSONResponse({"error": f"{job.api} jobs have no callbacks"}, status_code=409)
    if job.phase(store.clock())[0] not in TERMINAL:
        return JSONResponse({"error": "task is not terminal yet"}, status_code=409)
    if not job.callback_url:
        return JSONResponse({"error": "task has no callBackUrl"}, status_code=409)
    return JSONResponse(await store.deliver(job))


CONTROL_ROUTES = [
    Route("/emulator/faults", faults_endpoint, methods=["GET", "POST"]),
    Route("/emulator/reset", reset, methods=["POST"]),
    Route("/emulator/calls", calls, methods=["GET"]),
    Route("/emulator/tasks", tasks, methods=["GET"]),
    Route("/emulator/tasks/{task_id}/callback", redeliver, methods=["POST"]),
]
# uploads.ROUTES must precede the result-file route: both live under /files/.
ROUTES = [
    *market.ROUTES,
    *gpt4o.ROUTES,
    *flux.ROUTES,
    *kvid.ROUTES,
    *credit.ROUTES,
    *uploads.ROUTES,
    Route("/files/{task_id}/{name}", files.result_file, methods=["GET"]),
    *CONTROL_ROUTES,
]


def create_emulator(
    api_key: str = "emulator-key",
    hmac_key: str | None = None,
    faults: Faults | None = None,
    kvid_api_key: str = "kvid-emulator-key",
) -> Starlette:
    """A Starlette app emulating Kie's market, 4o Image, Flux Kontext, file upload and credit APIs, and kvid.ai's
    image API; its store is app.state.emulator. Kie endpoints take `Bearer api_key`, kvid `api-key: kvid_api_key`."""
    store = Emulator(api_key, hmac_key, faults or Faults(), kvid_api_key)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        # One client for all deliveries: Kie's 15 s timeout, and httpx does no retries by default.
        async with httpx.AsyncClient(timeout=15.0) as client:
            store.client = client
            try:
                yield
            finally:
                await store.close()  # cancel pending deliveries before the client closes
                store.client = None

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.emulator = store
    return app
