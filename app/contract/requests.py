"""The generate request as JSON Schema, one branch per model, from the catalogue validation uses.

Every field accepts null, which means "the model's default" (app/tasks/validation.py), and a field
the model does not take is accepted only as null; the branches are told apart by `model`, and the
default model's branch is the one a request without `model` matches.
"""

from __future__ import annotations

from typing import Any

from app.providers.catalogue import DEFAULT_MODEL, MODEL_LIST, ModelSpec
from app.providers.params import Param
from app.tasks.validation import COMMON_FIELDS

NULL: dict[str, Any] = {"type": "null"}
HTTP_URL = {"type": "string", "format": "uri", "pattern": "^https?://[^\\s]+$", "maxLength": 2048}


def param_schema(param: Param) -> dict[str, Any]:
    """What `param.convert` accepts, or null."""
    if param.kind == "enum":
        assert param.values is not None
        schema: dict[str, Any] = {"enum": [*param.values, None]}
    elif param.kind == "url":
        schema = {"type": ["string", "null"], "format": "uri", "pattern": HTTP_URL["pattern"]}
    else:
        schema = {"type": [{"int": "integer", "bool": "boolean"}.get(param.kind, param.kind), "null"]}
    if param.kind in ("int", "number"):
        schema |= _bounds("minimum", param.low) | _bounds("maximum", param.high)
    if param.kind == "string":
        schema |= _bounds("maxLength", param.high)
    if param.default is not None:
        schema["default"] = param.default
    return schema


def _bounds(keyword: str, bound: float | None) -> dict[str, Any]:
    if bound is None:
        return {}
    return {keyword: int(bound) if float(bound).is_integer() else bound}


def model_request(spec: ModelSpec) -> dict[str, Any]:
    """The request body a client sends for one model."""
    properties: dict[str, Any] = {
        "model": {"enum": [spec.name, None]} if spec.name == DEFAULT_MODEL else {"const": spec.name},
        "prompt": _prompt(spec),
        "imageInput": _image_input(spec),
        "options": {
            "type": ["object", "null"],
            "properties": {name: param_schema(param) for name, param in spec.options.items()},
            "additionalProperties": False,
        },
        "webhookUrl": HTTP_URL | {"type": ["string", "null"]},
    }
    properties |= {name: param_schema(spec.fields[name]) if name in spec.fields else NULL for name in COMMON_FIELDS}
    required = [name for name in ("model", "prompt", "imageInput") if _required(spec, name)]
    return {
        "title": spec.name,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _prompt(spec: ModelSpec) -> dict[str, Any]:
    if spec.prompt.optional_with_images:  # then blank, as if left out, is fine too
        return {
            "type": ["string", "null"],
            "maxLength": spec.prompt.max_length,
            "description": "May be left out, or blank, when imageInput holds an image.",
        }
    return {"type": "string", "minLength": spec.prompt.min_length, "maxLength": spec.prompt.max_length}


def _image_input(spec: ModelSpec) -> dict[str, Any]:
    images = spec.images
    if images is None:
        return {"type": ["array", "null"], "maxItems": 0}
    schema = {"type": ["array", "null"], "items": HTTP_URL, "maxItems": images.max_count}
    if images.required:
        schema |= {"type": "array", "minItems": 1}
    return schema


def _required(spec: ModelSpec, name: str) -> bool:
    if name == "model":
        return spec.name != DEFAULT_MODEL
    if name == "prompt":
        return not spec.prompt.optional_with_images
    return spec.images is not None and spec.images.required


def generate_request() -> dict[str, Any]:
    return {
        "description": "One branch per model (GET /api/images/models lists them); `model` defaults to "
        f"{DEFAULT_MODEL}. A field left out or null takes the model's default.",
        "oneOf": [{"$ref": f"#/components/schemas/{schema_name(spec)}"} for spec in MODEL_LIST],
    }


def model_schemas() -> dict[str, dict[str, Any]]:
    return {schema_name(spec): model_request(spec) for spec in MODEL_LIST}


def schema_name(spec: ModelSpec) -> str:
    """`GenerateRequest.nano-banana-pro`: component names allow letters, digits, '.', '-' and '_'."""
    return "GenerateRequest." + "".join(c if c.isalnum() or c in ".-_" else "_" for c in spec.name)
