"""Kie.ai market-jobs emulator: createTask/recordInfo, result files, signed callbacks, faults."""

import asyncio
import dataclasses
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from http.client import responses as http_phrases
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.emulator import images
from app.emulator.faults import Faults, create_error_message
from app.emulator.jobs import TERMINAL, Job
from app.providers import kie_signature


class Emulator:
    """The in-memory store behind one emulator app (exposed as app.state.emulator)."""

    def __init__(self, api_key: str, hmac_key: str | None, faults: Faults) -> None:
        self.api_key = api_key
        self.hmac_key = hmac_key
        self.client: httpx.AsyncClient | None = None  # owned by the app lifespan
        self.clock: Callable[[], float] = time.time  # replaceable so tests can step jobs through states
        self._deliveries: set[asyncio.Task[None]] = set()
        self.reset(faults)

    def reset(self, faults: Faults | None = None) -> None:
        self._cancel_deliveries()  # callbacks of forgotten jobs must not reach the next test's receiver
        self.jobs: dict[str, Job] = {}
        self.calls: dict[str, Any] = {"createTask": 0, "recordInfo": 0, "recordInfoByTask": Counter()}
        self.set_faults(faults or Faults())

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def pop_create_error(self) -> Response | None:
        """The next queued createTask failure (HTTP errors first), consuming it."""
        faults = self.faults
        if faults.create_http_errors:
            self.faults = dataclasses.replace(faults, create_http_errors=faults.create_http_errors[1:])
            status = faults.create_http_errors[0]
            return PlainTextResponse(f"{status} {http_phrases.get(status, 'Error')}", status_code=status)
        if faults.create_errors:
            self.faults = dataclasses.replace(faults, create_errors=faults.create_errors[1:])
            code = faults.create_errors[0]
            return _kie(code, create_error_message(code))
        return None

    def create_job(self, body: dict[str, Any], base_url: str) -> Job:
        faults = self.faults
        # Both draws always happen, in a fixed order, so a seed gives the same outcomes per job.
        failed = self.rng.random() < faults.fail_rate
        dropped = self.rng.random() < faults.drop_callbacks and bool(body.get("callBackUrl"))
        generate_s = 0.0 if faults.callback_before_response else faults.generate_s
        job = Job("task_" + secrets.token_hex(12), body, faults, self.clock(), generate_s, failed, dropped, base_url)
        self.jobs[job.task_id] = job
        return job

    async def run_callbacks(self, job: Job) -> None:
        """Wait for the job to finish (plus the callback delay), then deliver it 1 + duplicates times."""
        await asyncio.sleep(job.generate_s + job.faults.callback_delay_s)
        for _ in range(1 + job.faults.duplicate_callbacks):
            await self.deliver(job)

    def schedule_callbacks(self, job: Job) -> None:
        task = asyncio.create_task(self.run_callbacks(job))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def deliver(self, job: Job) -> dict[str, Any]:
        """POST the job's callback once, without retrying, and record the outcome."""
        record = {"at": self.clock(), **await self._post_callback(job)}
        job.deliveries.append(record)
        return record

    async def _post_callback(self, job: Job) -> dict[str, Any]:
        if self.client is None:
            return {"error": "emulator lifespan is not running, so it has no HTTP client"}
        headers = {}
        if self.hmac_key is not None:
            timestamp = str(int(self.clock()))
            headers[kie_signature.TIMESTAMP_HEADER] = timestamp
            headers[kie_signature.SIGNATURE_HEADER] = kie_signature.sign(self.hmac_key, job.task_id, timestamp)
        try:
            response = await self.client.post(job.callback_url or "", json=job.callback_body(), headers=headers)
        except httpx.HTTPError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"status": response.status_code}

    def _cancel_deliveries(self) -> list[asyncio.Task[None]]:
        tasks = list(self._deliveries)
        for task in tasks:
            task.cancel()
        return tasks

    async def close(self) -> None:
        await asyncio.gather(*self._cancel_deliveries(), return_exceptions=True)


def _kie(code: int, msg: str, data: Any = None) -> JSONResponse:
    # Kie answers HTTP 200 and puts the real outcome in the body's code.
    body: dict[str, Any] = {"code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def _store(request: Request) -> Emulator:
    return request.app.state.emulator


def _denied(request: Request) -> JSONResponse | None:
    if request.headers.get("authorization") == f"Bearer {_store(request).api_key}":
        return None
    return _kie(401, create_error_message(401))


def _create_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model is required and must be a non-empty string"
    if not isinstance(body.get("input"), dict):
        return "input is required and must be an object"
    prompt = body["input"].get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "input.prompt is required and must be a non-empty string"
    url = body.get("callBackUrl")
    if url not in (None, "") and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        return "callBackUrl must be an http(s) URL"
    return None


async def create_task(request: Request) -> Response:
    store = _store(request)
    store.calls["createTask"] += 1
    refusal = _denied(request) or store.pop_create_error()
    if refusal is not None:
        return refusal
    try:
        body = await request.json()
    except ValueError:
        return _kie(400, "Invalid JSON body")
    problem = _create_problem(body)
    if problem is not None:
        return _kie(422, problem)
    job = store.create_job(body, str(request.base_url))
    if job.callback_url and not job.dropped:
        if job.faults.callback_before_response:
            await store.run_callbacks(job)
        else:
            store.schedule_callbacks(job)
    await asyncio.sleep(job.faults.create_delay_s)  # after creating: a timed-out client still made a task
    return _kie(200, "success", {"taskId": job.task_id})


async def record_info(request: Request) -> Response:
    store = _store(request)
    store.calls["recordInfo"] += 1
    task_id = request.query_params.get("taskId")
    if task_id:
        store.calls["recordInfoByTask"][task_id] += 1
    if (refusal := _denied(request)) is not None:
        return refusal
    if not task_id:
        return _kie(400, "taskId is required")
    if (job := store.jobs.get(task_id)) is None:
        return _kie(404, "task not found")
    return _kie(200, "success", job.record(store.clock()))


async def result_file(request: Request) -> Response:
    store = _store(request)
    job = store.jobs.get(request.path_params["task_id"])
    served = job is not None and job.phase(store.clock())[0] == "success"
    if not served or request.path_params["name"] != f"0.{job.extension}":
        return PlainTextResponse("not found", status_code=404)
    ratio = images.ratio_for(job.body["input"])
    return Response(images.render(ratio, job.extension), media_type=images.MEDIA_TYPES[job.extension])


async def faults_endpoint(request: Request) -> Response:
    store = _store(request)
    if request.method == "POST":
        try:
            store.set_faults(Faults.from_dict(await request.json()))
        except ValueError as exc:  # also invalid JSON: JSONDecodeError is a ValueError
            return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(store.faults.to_dict())


async def reset(request: Request) -> Response:
    _store(request).reset()
    return JSONResponse({"reset": True})


async def calls(request: Request) -> Response:
    return JSONResponse(_store(request).calls)


async def tasks(request: Request) -> Response:
    store = _store(request)
    return JSONResponse([job.summary(store.clock()) for job in store.jobs.values()])


async def redeliver(request: Request) -> Response:
    store = _store(request)
    job = store.jobs.get(request.path_params["task_id"])
    if job is None:
        return JSONResponse({"error": "task not found"}, status_code=404)
    if job.phase(store.clock())[0] not in TERMINAL:
        return JSONResponse({"error": "task is not terminal yet"}, status_code=409)
    if not job.callback_url:
        return JSONResponse({"error": "task has no callBackUrl"}, status_code=409)
    return JSONResponse(await store.deliver(job))


ROUTES = [
    Route("/api/v1/jobs/createTask", create_task, methods=["POST"]),
    Route("/api/v1/jobs/recordInfo", record_info, methods=["GET"]),
    Route("/files/{task_id}/{name}", result_file, methods=["GET"]),
    Route("/emulator/faults", faults_endpoint, methods=["GET", "POST"]),
    Route("/emulator/reset", reset, methods=["POST"]),
    Route("/emulator/calls", calls, methods=["GET"]),
    Route("/emulator/tasks", tasks, methods=["GET"]),
    Route("/emulator/tasks/{task_id}/callback", redeliver, methods=["POST"]),
]


def create_emulator(
    api_key: str = "emulator-key", hmac_key: str | None = None, faults: Faults | None = None
) -> Starlette:
    """A Starlette app emulating Kie's market jobs API; its store is app.state.emulator."""
    store = Emulator(api_key, hmac_key, faults or Faults())

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
