"""kvid.ai's image API (live docs version, facts section 8): async generate, status and result; no callbacks.

kvid differs from Kie on the wire: an `api-key` header instead of Bearer, real HTTP statuses with a
{"success": false, "error": {"code": NAME, "message"}} envelope, snake_case fields, and `jobId` queries.
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.emulator import checks, files, images
from app.emulator.endpoints import Family, create_endpoint, query_endpoint
from app.emulator.jobs import Job
from app.emulator.store import Emulator
from app.emulator.wire import Dialect, Problem, iso8601

# The documented error names by HTTP status; 5xx are SERVER_ERROR, anything else INVALID_PARAMETERS.
ERROR_NAMES = {400: "INVALID_PROMPT", 402: "INSUFFICIENT_CREDITS", 422: "SAFETY_CHECK_FAILED", 429: "RATE_LIMITED"}
ERROR_MESSAGES = {
    "INVALID_PROMPT": "Invalid prompt",
    "INSUFFICIENT_CREDITS": "Insufficient credits",
    "SAFETY_CHECK_FAILED": "Content failed the safety check",
    "RATE_LIMITED": "Rate limit exceeded",
    "SERVER_ERROR": "Internal server error",
    "INVALID_PARAMETERS": "Invalid parameters",
}
# The shared timeline in kvid's status vocabulary.
STATUSES = {
    "waiting": "queued",
    "queuing": "queued",
    "generating": "processing",
    "success": "completed",
    "fail": "failed",
}


def error_name(status: int) -> str:
    return "SERVER_ERROR" if status >= 500 else ERROR_NAMES.get(status, "INVALID_PARAMETERS")


class KvidDialect(Dialect):
    id_param = "jobId"
    denied = Problem(401, "Invalid API key", "INVALID_API_KEY")
    missing_id = Problem(400, "jobId is required", "MISSING_PARAMETERS")
    not_found = Problem(404, "Job not found", "JOB_NOT_FOUND")

    def authorized(self, request: Request, store: Emulator) -> bool:
        return request.headers.get("api-key") == store.kvid_api_key

    def error(self, problem: Problem) -> Response:
        error = {"code": problem.name or error_name(problem.code), "message": problem.message}
        return JSONResponse({"success": False, "error": error}, status_code=problem.code)

    def create_error(self, code: int) -> Response:
        name = error_name(code)
        return self.error(Problem(code, ERROR_MESSAGES[name], name))


KVID = KvidDialect()


def _ok(data: dict[str, Any]) -> Response:
    return JSONResponse({"success": True, "data": data})


def _image_size(body: dict[str, Any]) -> str | None:
    size = body.get("image_size")
    if size is None:
        return None
    if isinstance(size, dict) and all(_is_side(size.get(side)) for side in ("width", "height")):
        return None
    return "image_size must be {width, height} with integers in 256..1024"


def _is_side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 256 <= value <= 1024


@dataclass(eq=False)
class KvidJob(Job):
    api = "kvid"
    id_prefix = "img_"
    sends_callbacks = False  # kvid documents no webhooks: clients must poll
    kie_account = False

    image_type: str = "text-to-image"  # fixed by the endpoint that created the job

    @property
    def model(self) -> str:
        return self.image_type  # kvid's key picks the product; the endpoint is all that names the "model"

    @property
    def ratio(self) -> tuple[float, float]:
        if (ratio := images.parse_ratio(self.body.get("aspect_ratio"))) is not None:
            return ratio
        size = self.body.get("image_size")  # validated: both sides are positive integers
        return (size["width"], size["height"]) if size else images.SQUARE

    @property
    def extension(self) -> str:
        return "png" if self.body.get("output_format") == "png" else "jpg"

    @property
    def count(self) -> int:
        return self.body.get("num_images") or 1

    def record(self, now: float) -> dict[str, Any]:
        status = STATUSES[self.phase(now)[0]]
        return {"job_id": self.task_id, "status": status, "progress": round(self.progress(now) * 100)}

    def result(self) -> dict[str, Any]:
        """The result endpoint's `data` for a completed job; width/height/size/type describe the served image
        (a result_content_type fault that swaps it for a page is the file host's doing, unknown to the API)."""
        width, height = images.size_for(self.ratio)
        urls = self.result_urls
        return {
            "job_id": self.task_id,
            "status": "completed",
            "result_url": urls[0],
            "result_urls": urls,
            "width": width,
            "height": height,
            "size": files.image_size(self),
            "type": images.MEDIA_TYPES[self.extension],
            "used_credit": self.credits,
            "prompt": self.body["prompt"],
            "created_at": iso8601(self.created),
        }


def _has_image(body: dict[str, Any]) -> bool:
    return bool(body.get("image_url") or body.get("image_urls"))


OPTIONAL_CHECKS = (
    checks.text("negative_prompt"),
    checks.text("aspect_ratio"),
    _image_size,
    checks.choice("num_images", (1, 2, 3, 4)),
    checks.choice("output_format", ("jpeg", "png")),
    checks.url("image_url"),
    checks.url_list("image_urls", 10),
    checks.boolean("enable_safety_checker"),
)


def _validate(body: Any, image_to_image: bool) -> Problem | None:
    if not isinstance(body, dict):
        return Problem(400, "request body must be a JSON object", "INVALID_PARAMETERS")
    if (problem := checks.text("prompt", required=True)(body)) is not None:
        return Problem(400, problem, "INVALID_PROMPT")
    if image_to_image and not _has_image(body):
        return Problem(400, "image_url or image_urls is required for image-to-image", "MISSING_PARAMETERS")
    if (problem := checks.first_problem(body, OPTIONAL_CHECKS)) is not None:
        return Problem(400, problem, "INVALID_PARAMETERS")
    return None


def _created(job: KvidJob) -> Response:
    return _ok(
        {
            "job_id": job.task_id,
            "status": "queued",
            "message": "Job queued",
            "estimated_time": math.ceil(job.generate_s),  # whole seconds
            "image_type": job.image_type,
        }
    )


def _status(job: KvidJob, now: float) -> Response:
    return _ok(job.record(now))


def _result(job: KvidJob, now: float) -> Response:
    state = job.phase(now)[0]
    if state == "success":
        return _ok(job.result())
    if state == "fail":
        return _ok({"job_id": job.task_id, "status": "failed", "error": job.faults.fail_msg})
    return KVID.error(Problem(400, f"Job is {STATUSES[state]}, not completed yet", "JOB_NOT_COMPLETED"))


def _generate(image_type: str) -> Family:
    validate = partial(_validate, image_to_image=image_type == "image-to-image")
    return Family("kvidGenerate", KVID, KvidJob, validate, _created, {"image_type": image_type})


ROUTES = [
    Route(f"/ai/generation/{kind}/generate-async", create_endpoint(_generate(kind)), methods=["POST"])
    for kind in ("text-to-image", "image-to-image")
] + [
    Route("/ai/generation/status", query_endpoint("kvidStatus", KVID, KvidJob, _status), methods=["GET"]),
    Route("/ai/generation/result", query_endpoint("kvidResult", KVID, KvidJob, _result), methods=["GET"]),
]
