"""imagehook's OpenAPI 3.1 document: every route, its parameters, bodies and answers.

The generate request comes from the model catalogue (app/contract/requests.py), so the document
accepts what validation accepts; the rest is written here, beside nothing else, and a test checks
that every route of the app appears in it and a schemathesis run that the service keeps to it.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from app.api.files import MAX_IMAGE_INDEX
from app.api.images import CANCEL_AFTER_BOUNDS_S, IDEMPOTENCY_KEY, MAX_WAIT_S, NUMBER
from app.contract import openai, requests, shapes
from app.contract.shapes import ref
from app.dashboard.queries import DASHBOARD_PAGE
from app.inbound.url_values import MAX_ID, TASK_ID
from app.providers.catalogue import MODELS
from app.reads.listing import DELIVERIES_PAGE, FEED_PAGE, TASKS_PAGE, Page

CLIENT = [{"bearer": []}, {"cookie": []}]
ADMIN = [{"admin": []}, {"adminSession": []}]
OPEN: list[dict[str, list[str]]] = []
REASONS = {
    400: "The request is invalid; the error names what is wrong.",
    401: "No valid credentials.",
    402: "The key's credit budget is spent.",
    403: "The credentials do not allow this (a cookie request that may be cross-site, or not the operator).",
    404: "No such resource, or another client's (the two are not told apart).",
    409: "Conflicts with what is already recorded.",
    413: "The request body is too large.",
    416: "The range asked for is outside the file.",
    429: "Too many requests for this key; see Retry-After.",
    500: "Kie.ai API key not configured.",
    503: "A service imagehook relies on is unavailable; see Retry-After.",
}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


def build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "imagehook",
            "version": version("imagehook"),
            "description": "A callback-driven gateway for asynchronous image generation: submit once, "
            "read status from imagehook's own database, get webhooks.",
        },
        "paths": client_paths() | openai_paths() | provider_paths() | operator_paths(),
        "components": {
            "schemas": shapes.SCHEMAS
            | openai.SCHEMAS
            | {"GenerateRequest": requests.generate_request()}
            | requests.model_schemas(),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key made with `imagehook keys create`."},
    "cookie": {"type": "apiKey", "in": "cookie", "name": "auth_token", "description": "The same key, as a cookie."},
    "admin": {"type": "http", "scheme": "bearer", "description": "IMAGEHOOK_ADMIN_KEY."},
    "adminSession": {"type": "apiKey", "in": "cookie", "name": "imagehook_admin"},
    "token": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "A signed image URL's token (signedImageUrls), or a task's read token (POST .../read-token).",
    },
    "metricsToken": {"type": "http", "scheme": "bearer", "description": "METRICS_TOKEN, when set."},
}


def client_paths() -> dict[str, Any]:
    status_answer = {"anyOf": [ref("Accepted"), ref("TaskStatus")]}
    return {
        "/api/images/generate": {
            "post": operation(
                "generate",
                "Submit a generation task",
                ["tasks"],
                parameters=[IDEMPOTENCY_HEADER, PREFER_HEADER, CANCEL_AFTER_HEADER],
                body=json_body(ref("GenerateRequest")),
                answers={
                    200: json_answer(
                        "The task's id; with `Prefer: wait=N`, its status once done or after N seconds.",
                        status_answer,
                        headers={"Preference-Applied": {"schema": shapes.STRING}},
                    )
                },
                errors=(400, 401, 402, 403, 409, 413, 429, 500, 503),
            )
        },
        "/api/images/status": {
            "get": operation(
                "getStatus",
                "A task's status (never an upstream call)",
                ["tasks"],
                parameters=[TASK_ID_QUERY, query("wait", WAIT_SCHEMA, "Wait up to this many seconds for the end.")],
                answers={200: json_answer("The task's status.", ref("TaskStatus"))},
                errors=(400, 401, 404, 503),
            )
        },
        "/api/images/tasks": {
            "get": operation(
                "listTasks",
                "The caller's tasks, newest first",
                ["tasks"],
                parameters=[
                    limit_query(TASKS_PAGE),
                    query("cursor", shapes.STRING, "nextCursor of the page before."),
                    query("state", shapes.STATE),
                    query("model", {"type": "string", "enum": list(MODELS)}),
                    query("createdAfter", shapes.TIME),
                ],
                answers={200: json_answer("A page of tasks.", ref("TaskPage"))},
                errors=(400, 401, 503),
            )
        },
        "/api/images/events": {
            "get": operation(
                "taskFeed",
                "The caller's task changes in order, after an event id",
                ["tasks"],
                parameters=[
                    query("after", {"type": "integer", "minimum": 0, "maximum": MAX_ID, "default": 0}),
                    limit_query(FEED_PAGE),
                ],
                answers={200: json_answer("Events after `after`; pass nextCursor as `after` next.", ref("Feed"))},
                errors=(400, 401, 503),
            )
        },
        "/api/images/tasks/{task_id}/events": {
            "get": operation(
                "taskEvents",
                "A task's status as Server-Sent Events, until it is done",
                ["tasks"],
                parameters=[TASK_ID_PATH, TOKEN_QUERY],
                answers={
                    200: event_stream("Each new status; comments keep the stream alive.", "status", ref("TaskStatus"))
                },
                errors=(400, 401, 403, 404, 503),
                security=[*CLIENT, {"token": []}],
            )
        },
        "/api/images/tasks/{task_id}/cancel": {
            "post": operation(
                "cancelTask",
                "Cancel a pending or processing task",
                ["tasks"],
                parameters=[TASK_ID_PATH],
                answers={
                    200: json_answer("Canceled (now or before): fail, failCode canceled.", ref("TaskStatus")),
                    409: json_answer(
                        "The task had already finished otherwise; its status, and why.",
                        {"allOf": [ref("TaskStatus"), ref("Error")]},
                    ),
                },
                errors=(400, 401, 403, 404, 503),
            )
        },
        "/api/images/tasks/{task_id}/read-token": {
            "post": operation(
                "readToken",
                "A token that opens this task's event stream without a key, for EventSource",
                ["tasks"],
                parameters=[TASK_ID_PATH],
                answers={200: json_answer("The token, and the stream's URL with it.", ref("ReadToken"))},
                errors=(400, 401, 403, 404, 503),
            )
        },
        "/api/images/{task_id}/files/{n}": {"get": file_operation("getFile", [*CLIENT, {"token": []}], [TOKEN_QUERY])},
        "/api/images/models": {
            "get": operation(
                "listModels",
                "Every model and what it accepts",
                ["models"],
                answers={200: json_answer("The catalogue.", ref("Catalogue"))},
                security=OPEN,
            )
        },
        "/api/uploads": {
            "post": operation(
                "upload",
                "A local image in, a URL for imageInput out",
                ["uploads"],
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "contentMediaType": "image/png"}},
                                "required": ["file"],
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"data": {"type": "string", "description": "base64 or a data: URL"}},
                                "required": ["data"],
                            }
                        },
                    },
                },
                answers={200: json_answer("The uploaded image's URL.", ref("Upload"))},
                errors=(400, 401, 403, 413, 503),
            )
        },
        "/api/webhooks/deliveries": {
            "get": operation(
                "listDeliveries",
                "Webhook deliveries of the caller's tasks, with every attempt",
                ["webhooks"],
                parameters=[
                    query("taskId", TASK_ID_SCHEMA),
                    limit_query(DELIVERIES_PAGE),
                ],
                answers={200: json_answer("Newest first.", ref("DeliveryList"))},
                errors=(400, 401, 503),
            )
        },
        "/api/webhooks/deliveries/{delivery_id}/retry": {
            "post": operation(
                "retryDelivery",
                "Send a webhook again now",
                ["webhooks"],
                parameters=[path("delivery_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})],
                answers={202: json_answer("Queued for another attempt.", ref("RetryQueued"))},
                errors=(401, 403, 404, 503),
            )
        },
        "/api/usage": {
            "get": operation(
                "getUsage",
                "The caller's tasks and credits, by model or by day",
                ["usage"],
                parameters=[
                    query("groupBy", {"type": "string", "enum": ["model", "day"], "default": "model"}),
                    query("from", shapes.TIME, "Default: 30 days ago."),
                    query("to", shapes.TIME, "Default: now."),
                ],
                answers={200: json_answer("Totals and groups.", ref("Usage"))},
                errors=(400, 401, 503),
            )
        },
    }


def openai_paths() -> dict[str, Any]:
    """OpenAI's Images API over ordinary tasks; its errors are OpenAI's shape, not {"error": text}."""
    edit_form = {"multipart/form-data": {"schema": ref("OpenAIEditRequest")}}
    return {
        "/v1/images/generations": {
            "post": _openai("createImage", "Create images (OpenAI's Images API)", json_body(ref("OpenAIImagesRequest")))
        },
        "/v1/images/edits": {
            "post": _openai(
                "createImageEdit", "Edit images (OpenAI's Images API)", {"required": True, "content": edit_form}
            )
        },
    }


def _openai(op_id: str, summary: str, body: dict[str, Any]) -> dict[str, Any]:
    errors = {str(code): json_answer(openai.REASONS[code], ref("OpenAIError")) for code in openai.OPENAI_ERRORS}
    answer = json_answer(
        "The task's images, once it is done.",
        ref("OpenAIImagesAnswer"),
        headers={"X-Imagehook-Task-Id": {"schema": shapes.STRING}},
    )
    return {
        "operationId": op_id,
        "summary": summary,
        "tags": ["openai"],
        "security": CLIENT,
        "parameters": [IDEMPOTENCY_HEADER],
        "requestBody": body,
        "responses": {"200": answer} | errors,
    }


def provider_paths() -> dict[str, Any]:
    return {
        "/callbacks/{api}/{task_id}/{token}": {
            "post": operation(
                "providerCallback",
                "Where providers deliver results (the URL imagehook gave them)",
                ["providers"],
                parameters=[path("api", shapes.STRING), TASK_ID_PATH, path("token", shapes.STRING)],
                body=json_body({"type": "object", "description": "The provider's callback, as it sends it."}),
                answers={200: json_answer("Received.", ref("CallbackReceived"))},
                errors=(400, 401, 404, 409, 413, 503),
                security=OPEN,
            )
        }
    }


def operator_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": operation(
                "healthz", "Liveness", ["operations"], answers={200: json_answer("Up.", ref("Health"))}, security=OPEN
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: the database answers at the schema's head, and shutdown has not begun",
                ["operations"],
                answers={
                    200: json_answer("Ready.", ref("Readiness")),
                    503: json_answer("Not ready (draining, or the database is out or behind).", ref("Readiness")),
                },
                security=OPEN,
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                ["operations"],
                answers={200: json_answer("OpenAPI 3.1.", {"type": "object"})},
                security=OPEN,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics of this process",
                ["operations"],
                answers={200: {"description": "The text exposition format.", "content": {"text/plain": TEXT}}},
                errors=(401,),
                security=[{}, {"metricsToken": []}],
            )
        },
    } | dashboard_paths()


def dashboard_paths() -> dict[str, Any]:
    page = {"description": "The page, or the sign-in form.", "content": {"text/html": TEXT}}
    signed_in = {"description": "To the dashboard.", "headers": {"Location": {"schema": shapes.STRING}}}
    return {
        "/dashboard": {
            "get": operation(
                "dashboard",
                "The operator's dashboard (the sign-in form without a session)",
                ["dashboard"],
                answers={200: page, 401: page, 403: page},
                errors=(404,),
                security=ADMIN,
            )
        },
        "/dashboard/sign-in": {
            "post": operation(
                "dashboardSignIn",
                "Sign in with the admin key",
                ["dashboard"],
                body={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": {"key": shapes.STRING}}
                        }
                    },
                },
                answers={303: signed_in, 401: page},
                errors=(400, 404, 413),
                security=OPEN,
            )
        },
        "/dashboard/sign-out": {
            "post": operation("dashboardSignOut", "Sign out", ["dashboard"], answers={303: signed_in}, security=OPEN)
        },
        "/dashboard/static/{name}": {
            "get": operation(
                "dashboardAsset",
                "The page's script, style sheet and icon",
                ["dashboard"],
                parameters=[path("name", {"type": "string", "enum": ["dashboard.js", "dashboard.css", "favicon.svg"]})],
                answers={
                    200: {
                        "description": "The file.",
                        "content": {kind: TEXT for kind in ("text/javascript", "text/css", "image/svg+xml")},
                    }
                },
                errors=(404,),
                security=OPEN,
            )
        },
        "/dashboard/api/summary": admin_json(
            "dashboardSummary", "Counts by state, and for the last hour", "DashboardSummary"
        ),
        "/dashboard/api/tasks": admin_json(
            "dashboardTasks",
            "Every client's tasks, newest first",
            "DashboardTasks",
            [
                limit_query(DASHBOARD_PAGE),
                query("state", shapes.STATE),
                query("cursor", shapes.STRING),
            ],
        ),
        "/dashboard/api/tasks/{task_id}": admin_json(
            "dashboardTask", "A task with its history, callbacks and webhooks", "DashboardTask", [TASK_ID_PATH]
        ),
        "/dashboard/api/stream": {
            "get": operation(
                "dashboardStream",
                "Every task created and every state change, as Server-Sent Events",
                ["dashboard"],
                parameters=[header("Last-Event-ID", {"type": "string", "pattern": "^[0-9]{1,10}$"})],
                answers={200: event_stream("A task created or changed, anywhere.", "change", CHANGE)},
                errors=(401, 403, 404, 503),
                security=ADMIN,
            )
        },
        "/dashboard/files/{task_id}/{n}": {"get": file_operation("dashboardFile", ADMIN)},
    }


def admin_json(op_id: str, summary: str, schema: str, parameters: list[Any] | None = None) -> dict[str, Any]:
    return {
        "get": operation(
            op_id,
            summary,
            ["dashboard"],
            parameters=parameters or [],
            answers={200: json_answer(summary + ".", ref(schema))},
            errors=(400, 401, 403, 404, 503),
            security=ADMIN,
        )
    }


def file_operation(op_id: str, security: list[Any], extra: list[Any] | None = None) -> dict[str, Any]:
    image = {"description": "The image.", "content": {kind: BINARY for kind in IMAGE_TYPES}}
    return operation(
        op_id,
        "A result image, from imagehook's own copy (Range requests answered)",
        ["files"],
        parameters=[
            TASK_ID_PATH,
            path("n", {"type": "integer", "minimum": 0, "maximum": MAX_IMAGE_INDEX}),
            header("If-None-Match", shapes.STRING),
            header("Range", shapes.STRING),
            *(extra or []),
        ],
        answers={
            200: image,
            206: {"description": "The part asked for.", "content": {kind: BINARY for kind in IMAGE_TYPES}},
            302: {"description": "To a presigned bucket URL (STORAGE_REDIRECT)."},
            304: {"description": "Unchanged (If-None-Match)."},
            416: {"description": REASONS[416], "headers": {"Content-Range": {"schema": shapes.STRING}}},
        },
        errors=(400, 401, 403, 404, 503),
        security=security,
    )


def operation(
    op_id: str,
    summary: str,
    tags: list[str],
    *,
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    answers: dict[int, Any],
    errors: tuple[int, ...] = (),
    security: list[Any] = CLIENT,
) -> dict[str, Any]:
    responses = {str(code): answer for code, answer in answers.items()}
    responses |= {str(code): error_answer(code) for code in errors if str(code) not in responses}
    if parameters or body:  # any request can be refused for a NUL in its URL or headers
        responses.setdefault("400", error_answer(400))
    result: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": tags, "security": security}
    if parameters:
        result["parameters"] = parameters
    if body:
        result["requestBody"] = body
    return result | {"responses": dict(sorted(responses.items()))}


def error_answer(code: int) -> dict[str, Any]:
    return json_answer(REASONS[code], ref("Error"))


def json_answer(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    return answer | ({"headers": headers} if headers else {})


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def event_stream(description: str, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """Server-Sent Events: the schema is one event's (OpenAPI 3.2's itemSchema, as 3.1 tools read it)."""
    one_event = {
        "type": "object",
        "properties": {
            "event": {"const": event},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
            "id": shapes.STRING,
        },
        "required": ["event", "data"],
    }
    return {"description": description, "content": {"text/event-stream": {"schema": one_event}}}


def limit_query(page: Page) -> dict[str, Any]:
    return query("limit", {"type": "integer", "minimum": 1, "maximum": page.maximum, "default": page.default})


def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return _parameter("query", name, schema, description)


def path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return _parameter("path", name, schema, "") | {"required": True}


def header(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return _parameter("header", name, schema, description)


def _parameter(where: str, name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    parameter = {"name": name, "in": where, "schema": schema}
    return parameter | ({"description": description} if description else {})


TEXT = {"schema": {"type": "string"}}
CHANGE = shapes.record({"id": shapes.INTEGER, "taskId": shapes.STRING, "state": shapes.STATE, "outcome": shapes.STRING})
BINARY = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
TASK_ID_SCHEMA = {"type": "string", "pattern": f"^{TASK_ID.pattern}$"}
TASK_ID_PATH = path("task_id", TASK_ID_SCHEMA)
LOW_S, HIGH_S = CANCEL_AFTER_BOUNDS_S
CANCEL_AFTER_HEADER = header(
    "Cancel-After",
    {"type": "string", "minLength": 1, "pattern": f"^(?:{NUMBER}|(?:{NUMBER}h)?(?:{NUMBER}m)?(?:{NUMBER}s)?)$"},
    f"Cancel the task if it has not finished this long after submission ({LOW_S}s to {HIGH_S // 3600}h): "
    "seconds (90) or hours, minutes and seconds (30s, 5m, 1h30m).",
)
TOKEN_QUERY = query("token", shapes.STRING, "Instead of a key: the token of a signed URL or a read token.")
TASK_ID_QUERY = query("taskId", TASK_ID_SCHEMA) | {"required": True}
IDEMPOTENCY_HEADER = header(
    "Idempotency-Key",
    {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
    "The same key with the same body answers the first task again; with another body, 409.",
)
PREFER_HEADER = header(
    "Prefer",
    {"type": "string", "examples": ["wait=30"]},
    f"`wait=N` (RFC 7240): answer with the task's status once done, or after N seconds (at most {MAX_WAIT_S}); "
    "other preferences are ignored, as the RFC asks.",
)
WAIT_SCHEMA = {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}
