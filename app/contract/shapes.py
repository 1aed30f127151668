"""The JSON bodies imagehook answers with, as JSON Schema components."""

from __future__ import annotations

from typing import Any

from app.tasks.domain import State

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
TIME = {"type": "string", "format": "date-time"}
URL = {"type": "string", "format": "uri"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def record(properties: dict[str, Any], description: str = "", optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object that always has these properties, and sometimes the optional ones (and may gain more:
    clients ignore what they do not know)."""
    schema = {"type": "object", "properties": properties | (optional or {}), "required": list(properties)}
    return schema | ({"description": description} if description else {})


STATE = {"type": "string", "enum": [state.value for state in State]}

TASK_STATUS = record(
    {
        "taskId": STRING,
        "state": STATE,
        "imageUrl": nullable(URL),
        "imageUrls": {"type": "array", "items": URL},
        "expiresAt": nullable(TIME),
        "failMsg": nullable(STRING),
        "failCode": nullable(STRING),
        "costTime": nullable(INTEGER),
        "model": STRING,
        "createdAt": TIME,
        "updatedAt": TIME,
        "signedImageUrls": {"type": "array", "items": URL},
        "signedUrlsExpireAt": nullable(TIME),
    },
    "A task as its client sees it. Image URLs are imagehook's own copies once stored; until then the "
    "provider's, which expire at expiresAt. failCode says why a task failed (canceled, timeout, invalid, "
    "or the provider's code). A task waiting for a create slot also has queuePosition (1: next) and "
    "estimatedStartAt.",
    optional={"queuePosition": {"type": "integer", "minimum": 1}, "estimatedStartAt": TIME},
)

ATTEMPT = record(
    {
        "at": TIME,
        "statusCode": nullable(INTEGER),
        "error": nullable(STRING),
        "durationMs": nullable(INTEGER),
        "responseBody": nullable(STRING),
    }
)

DELIVERY = record(
    {
        "id": INTEGER,
        "webhookId": STRING,
        "taskId": STRING,
        "url": STRING,
        "eventType": STRING,
        "state": {"type": "string", "enum": ["pending", "delivered", "failed", "gone"]},
        "attempts": INTEGER,
        "nextAttemptAt": nullable(TIME),
        "lastStatus": nullable(INTEGER),
        "lastError": nullable(STRING),
        "createdAt": TIME,
        "deliveredAt": nullable(TIME),
        "attemptLog": {"type": "array", "items": ref("WebhookAttempt")},
    }
)

FEED_EVENT = {
    "type": "object",
    "properties": {
        "id": INTEGER,
        "taskId": STRING,
        "state": STATE,
        "at": TIME,
        "imageUrls": {"type": "array", "items": URL},
        "failMsg": nullable(STRING),
        "failCode": nullable(STRING),
    },
    "required": ["id", "taskId", "state", "at"],
}

USAGE_GROUP = {
    "type": "object",
    "properties": {"model": STRING, "day": STRING, "tasks": INTEGER, "credits": NUMBER, "reserved": NUMBER},
    "required": ["tasks", "credits", "reserved"],
}
USAGE_TOTAL = record({"tasks": INTEGER, "credits": NUMBER, "reserved": NUMBER})

PARAM_INFO = {"type": "object", "properties": {"type": STRING}, "required": ["type"]}
MODEL = record(
    {
        "name": STRING,
        "provider": STRING,
        "api": STRING,
        "callbacks": {"type": "boolean"},
        "editsImages": {"type": "boolean"},
        "prompt": record({"maxLength": INTEGER, "minLength": INTEGER, "required": {"type": "boolean"}}),
        "imageInput": nullable(record({"min": INTEGER, "max": INTEGER})),
        "fields": {"type": "object", "additionalProperties": PARAM_INFO},
        "options": {"type": "object", "additionalProperties": PARAM_INFO},
        "defaults": {"type": "object"},
    }
)

DASHBOARD_TASK = record(
    {
        "taskId": STRING,
        "model": STRING,
        "state": STATE,
        "keyName": STRING,
        "prompt": nullable(STRING),
        "createdAt": TIME,
        "durationS": nullable(NUMBER),
        "thumbnail": nullable(STRING),
        "failMsg": nullable(STRING),
    }
)

SCHEMAS: dict[str, Any] = {
    "Error": record({"error": STRING}, "Every error the client API answers with: the text says what is wrong."),
    "Accepted": record({"taskId": STRING}, "The task exists; read its status, wait for it, or await its webhook."),
    "TaskStatus": TASK_STATUS,
    "TaskPage": record({"tasks": {"type": "array", "items": ref("TaskStatus")}, "nextCursor": nullable(STRING)}),
    "Feed": record({"events": {"type": "array", "items": FEED_EVENT}, "nextCursor": STRING}),
    "WebhookAttempt": ATTEMPT,
    "WebhookDelivery": DELIVERY,
    "DeliveryList": record({"deliveries": {"type": "array", "items": ref("WebhookDelivery")}}),
    "RetryQueued": record({"id": INTEGER, "state": {"const": "pending"}}),
    "Usage": record(
        {
            "from": TIME,
            "to": TIME,
            "groupBy": {"type": "string", "enum": ["model", "day"]},
            "total": USAGE_TOTAL,
            "groups": {"type": "array", "items": USAGE_GROUP},
        }
    ),
    "Upload": record(
        {"url": URL, "fileName": STRING, "mimeType": STRING, "size": INTEGER, "expiresAt": STRING},
        "Where the image now is, for imageInput, until expiresAt.",
    ),
    "Catalogue": record({"default": STRING, "models": {"type": "array", "items": MODEL}}),
    "ReadToken": record(
        {"token": STRING, "expiresAt": TIME, "eventsUrl": URL},
        "Opens this task's event stream without a key (`?token=`), until expiresAt.",
    ),
    "CallbackReceived": record({"code": INTEGER, "msg": STRING}),
    "Health": record({"status": STRING}),
    "Readiness": {"type": "object", "properties": {"status": STRING}, "required": ["status"]},
    "DashboardSummary": record({"states": {"type": "object"}, "lastHour": {"type": "object"}}),
    "DashboardTasks": record({"tasks": {"type": "array", "items": DASHBOARD_TASK}, "nextCursor": nullable(STRING)}),
    "DashboardTask": record(
        {
            "task": {"type": "object"},
            "events": {"type": "array"},
            "callbacks": {"type": "array"},
            "webhooks": {"type": "array", "items": ref("WebhookDelivery")},
        }
    ),
}
