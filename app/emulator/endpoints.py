"""The request flow every family shares, written once: create endpoints and status-query endpoints.

A family only supplies what differs (its dialect, body checks, job class and response shapes), so counting,
auth, queued create faults, create delays and callback scheduling behave identically across families.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.emulator.jobs import Job
from app.emulator.store import store_of
from app.emulator.wire import Dialect, Problem, http_error

Endpoint = Callable[[Request], Any]
_INVALID_JSON = object()  # not None: a JSON `null` body is valid JSON, just not an object


@dataclass(frozen=True)
class Family:
    """One create endpoint of one API family."""

    counter: str  # key in /emulator/calls
    dialect: Dialect
    job_class: type[Job]
    validate: Callable[[Any], Problem | None]
    created: Callable[[Any], Response]  # the success answer, given the new job (of job_class)
    job_fields: dict[str, Any] = field(default_factory=dict)  # extra Job fields fixed by the endpoint


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8 bytes
        return _INVALID_JSON


def create_endpoint(family: Family) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        store = store_of(request)
        store.calls[family.counter] += 1
        dialect = family.dialect
        if not dialect.authorized(request, store):
            return dialect.error(dialect.denied)
        # Auth first: the real APIs refuse an unknown key before anything else, and a refused call
        # should not consume a fault meant for the client under test (nor should a rate-limited one).
        if (refusal := store.rate_limit_refusal(family.job_class)) is not None:
            store.calls["rateLimited"] += 1
            return dialect.error(Problem(429, refusal))
        if (fault := store.pop_create_fault()) is not None:
            kind, code = fault
            return http_error(code) if kind == "http" else dialect.create_error(code)
        body = await _json_body(request)
        if body is _INVALID_JSON:
            return dialect.error(Problem(400, "Invalid JSON body", "INVALID_PARAMETERS"))
        problem = family.validate(body)
        if problem is not None:
            return dialect.error(problem)
        job = store.create_job(family.job_class, body, str(request.base_url), **family.job_fields)
        await store.start_callbacks(job)
        await asyncio.sleep(job.faults.create_delay_s)  # after creating: a timed-out client still made a task
        return family.created(job)

    return endpoint


def query_endpoint(
    counter: str, dialect: Dialect, job_class: type[Job], answer: Callable[[Any, float], Response]
) -> Endpoint:
    """A status query by job id. Jobs of other families are "not found", as they live in other real services."""

    async def endpoint(request: Request) -> Response:
        store = store_of(request)
        store.calls[counter] += 1
        task_id = request.query_params.get(dialect.id_param)
        if task_id:
            store.calls["recordInfoByTask"][task_id] += 1
        if not dialect.authorized(request, store):
            return dialect.error(dialect.denied)
        if not task_id:
            return dialect.error(dialect.missing_id)
        job = store.jobs.get(task_id)
        if not isinstance(job, job_class):
            return dialect.error(dialect.not_found)
        return answer(job, store.clock())

    return endpoint
