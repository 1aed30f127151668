"""Provider conventions shared by the endpoints: how a request authenticates and how an error looks.

Kie (market, 4o, Flux Kontext) answers HTTP 200 and puts the outcome in the body's `code`; kvid.ai answers with
the real HTTP status and a {"success": false, "error": {...}} envelope. Endpoints describe a refusal as a
Problem and let their provider's Dialect render it, so the request flow is written once for both.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import responses as http_phrases
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from app.emulator.faults import create_error_message

if TYPE_CHECKING:
    from app.emulator.jobs import Job
    from app.emulator.store import Emulator


@dataclass(frozen=True)
class Problem:
    code: int  # Kie: the body code; kvid: the HTTP status
    message: str
    name: str = ""  # kvid's error code name (INVALID_PROMPT, ...); Kie has none


class Dialect:
    """One provider's wire conventions."""

    id_param: str  # query parameter naming the job in status queries
    denied: Problem
    missing_id: Problem
    not_found: Problem

    def authorized(self, request: Request, store: "Emulator") -> bool:
        raise NotImplementedError

    def error(self, problem: Problem) -> Response:
        raise NotImplementedError

    def create_error(self, code: int) -> Response:
        """The answer to a queued create_errors entry."""
        raise NotImplementedError


def http_error(status: int) -> Response:
    """A queued create_http_errors entry: a bare HTTP error, as a proxy in front of any provider would send."""
    return PlainTextResponse(f"{status} {http_phrases.get(status, 'Error')}", status_code=status)


def kie(code: int, msg: str, data: Any = None) -> JSONResponse:
    # Kie answers HTTP 200 and puts the real outcome in the body's code.
    body: dict[str, Any] = {"code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


class KieDialect(Dialect):
    id_param = "taskId"
    denied = Problem(401, create_error_message(401))
    missing_id = Problem(400, "taskId is required")
    not_found = Problem(404, "task not found")

    def authorized(self, request: Request, store: "Emulator") -> bool:
        return request.headers.get("authorization") == f"Bearer {store.api_key}"

    def error(self, problem: Problem) -> Response:
        return kie(problem.code, problem.message)

    def create_error(self, code: int) -> Response:
        return kie(code, create_error_message(code))


KIE = KieDialect()


def kie_created(job: "Job") -> Response:
    """Every Kie create endpoint answers the same way."""
    return kie(200, "success", {"taskId": job.task_id})


def kie_record(job: "Job", now: float) -> Response:
    """Every Kie status query answers with the job's record as `data`."""
    return kie(200, "success", job.record(now))


def iso8601(timestamp: float) -> str:
    """UTC, millisecond precision, Z suffix: e.g. 2025-01-02T03:04:05.678Z."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
