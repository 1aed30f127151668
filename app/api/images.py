"""The client API, compatible with the seed gateway: generate and status, plus waiting."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.auth import owner_of
from app.api.body import read_json
from app.deps import Deps
from app.errors import BadRequest, GatewayError, PaymentRequired, TooManyRequests, UpstreamRejected
from app.inbound import url_values as query
from app.observe import metrics
from app.tasks import submit
from app.tasks.status import read_status, wait_for_status
from app.tasks.validation import parse_generate

MAX_WAIT_S = 60
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=([0-9]{1,6})")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Replicate's convention: seconds (`90`, `1.5`), or hours, minutes and seconds in that order (`1h30m`, `45s`).
NUMBER = r"[0-9]{1,6}(?:\.[0-9]{1,3})?"
CANCEL_AFTER = re.compile(rf"({NUMBER})|(?=[0-9])(?:({NUMBER})h)?(?:({NUMBER})m)?(?:({NUMBER})s)?")
CANCEL_AFTER_BOUNDS_S = (1, 24 * 3600)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


def preferred_wait(request: Request) -> int | None:
    """`Prefer: wait=N` (RFC 7240); a preference, so more than 60 is served as 60."""
    match = PREFER_WAIT.search(request.headers.get("prefer", ""))
    return min(int(match.group(1)), MAX_WAIT_S) if match else None


def cancel_after(request: Request) -> float | None:
    """`Cancel-After`: how long after its submission an unfinished task is canceled, in seconds."""
    raw = request.headers.get("cancel-after")
    if raw is None:
        return None
    found = CANCEL_AFTER.fullmatch(raw.strip())
    seconds, hours, minutes, rest = (float(part or 0) for part in found.groups()) if found else (-1, 0, 0, 0)
    total = seconds + hours * 3600 + minutes * 60 + rest
    low, high = CANCEL_AFTER_BOUNDS_S
    if not low <= total <= high:
        raise BadRequest(
            f"Cancel-After must be a duration from {low}s to {high // 3600}h: seconds (90) or hours, minutes"
            " and seconds (30s, 5m, 1h30m)"
        )
    return total


def query_wait(request: Request) -> float | None:
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        raise BadRequest(f"wait must be a number of seconds from 0 to {MAX_WAIT_S}")
    return wait


def submission_outcome(exc: GatewayError) -> str:
    if isinstance(exc, TooManyRequests | PaymentRequired):
        return "limited"
    if isinstance(exc, UpstreamRejected):
        return "rejected_upstream"
    return "unavailable" if exc.status >= 500 else "rejected_input"


@dataclass
class Counted:
    model: str = "unknown"  # until the body names a model of the catalogue: labels stay bounded


@contextlib.contextmanager
def counted_submission() -> Iterator[Counted]:
    """Counts the submission its block makes in imagehook_tasks_submitted_total, by outcome and by the model
    the block sets once it knows it."""
    counted = Counted()
    try:
        yield counted
    except GatewayError as exc:
        metrics.labelled(metrics.TASKS_SUBMITTED, counted.model, submission_outcome(exc)).inc()
        raise
    metrics.labelled(metrics.TASKS_SUBMITTED, counted.model, "accepted").inc()


async def generate(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    owner = await owner_of(request)
    key, wait, deadline_s = idempotency_key(request), preferred_wait(request), cancel_after(request)
    with counted_submission() as counted:
        submission = parse_generate(await read_json(request, deps.settings.max_body_bytes))
        counted.model = submission.model.name
        task_id = await submit.submit_task(
            deps, api_key_id=owner, submission=submission, idempotency_key=key, cancel_after_s=deadline_s
        )
    if wait is None:
        return JSONResponse({"taskId": task_id})
    status = await wait_for_status(deps, api_key_id=owner, task_id=task_id, wait_s=wait)
    return Response(status.body, media_type="application/json", headers={"Preference-Applied": f"wait={wait}"})


async def status(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    owner = await owner_of(request)
    task_id = request.query_params.get("taskId", "").strip()
    if not task_id:
        raise BadRequest("taskId is required")
    query.task_id(task_id)
    wait = query_wait(request)
    if wait:
        status = await wait_for_status(deps, api_key_id=owner, task_id=task_id, wait_s=wait)
    else:
        status = await read_status(deps, owner, task_id)
    return Response(status.body, media_type="application/json")


routes = [
    Route("/api/images/generate", generate, methods=["POST"]),
    Route("/api/images/status", status, methods=["GET"]),
]
