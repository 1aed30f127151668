"""The OpenAI-compatible Images API in the document: its requests and answers as OpenAI's SDKs send and
read them, from the tables app/tasks/openai_compat.py works with."""

from __future__ import annotations

from typing import Any

from app.providers.catalogue import MODELS
from app.tasks.openai_compat import (
    ALIASES,
    DEFAULT_ONLY,
    FORMATS,
    IGNORED,
    MAX_N,
    QUALITY_TIERS,
    RESPONSE_FORMATS,
)

OPENAI_ERRORS = (400, 401, 403, 409, 413, 429, 500, 502, 503, 504)
REASONS = {
    400: "The request is invalid; `param` names what is wrong.",
    401: "No valid API key.",
    403: "A cookie request that may be cross-site.",
    409: "An Idempotency-Key reused with another request.",
    413: "The request is too large.",
    429: "A rate, in-flight or credit limit of the key (code rate_limit_exceeded or insufficient_quota).",
    500: "The generation failed (code generation_failed), or no provider key is configured.",
    502: "A result image could not be read for b64_json.",
    503: "A service imagehook relies on is unavailable.",
    504: "The task is not finished after OPENAI_WAIT_S (code timeout); it goes on, and its id is in the message.",
}


def _maybe(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _parameters(edit: bool) -> dict[str, Any]:
    """Every field a request may hold; in a multipart edit each is a text field."""
    text = {"type": "string"}
    number = text if edit else {"type": "integer", "minimum": 1, "maximum": MAX_N}
    formats = sorted({name for names in FORMATS.values() for name in names})
    defaults = {name: {"const": value} for name, value in DEFAULT_ONLY.items()}
    if edit:  # a form field is text: stream=false arrives as "false"
        defaults = {name: text for name in DEFAULT_ONLY}
    return {
        "model": {"type": "string", "enum": [*ALIASES, *MODELS]},
        "prompt": text,
        "n": number,
        "size": {"type": "string", "examples": ["1024x1024", "1536x1024", "1024x1536", "auto"]},
        "quality": {"type": "string", "enum": ["auto", *QUALITY_TIERS]},
        "output_format": {"type": "string", "enum": formats},
        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS)},
        **defaults,
        **{name: text for name in sorted(IGNORED)},
    }


def generations_request() -> dict[str, Any]:
    fields = {name: _maybe(schema) for name, schema in _parameters(edit=False).items()}
    return {"type": "object", "properties": fields, "additionalProperties": False}


def edits_request() -> dict[str, Any]:
    files = {"type": "array", "items": {"type": "string", "contentMediaType": "image/png"}}
    fields = _parameters(edit=True) | {
        "image": files,
        "image[]": files,
        "mask": {"type": "string", "contentMediaType": "image/png"},
    }
    return {"type": "object", "properties": fields, "additionalProperties": False}


IMAGES_ANSWER = {
    "type": "object",
    "properties": {
        "created": {"type": "integer"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"url": {"type": "string", "format": "uri"}, "b64_json": {"type": "string"}},
            },
        },
    },
    "required": ["created", "data"],
}
OPENAI_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}
SCHEMAS = {
    "OpenAIImagesRequest": generations_request(),
    "OpenAIEditRequest": edits_request(),
    "OpenAIImagesAnswer": IMAGES_ANSWER,
    "OpenAIError": OPENAI_ERROR,
}
