"""GET /api/images/models: every model and what it accepts, from the table validation uses."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.providers.catalogue import DEFAULT_MODEL, MODEL_LIST, ModelSpec
from app.providers.registry import LABELS


def describe(spec: ModelSpec) -> dict[str, Any]:
    images = spec.images
    return {
        "name": spec.name,
        "provider": LABELS[spec.api.provider],
        "api": spec.api.name,
        "callbacks": spec.api.callback_route is not None,
        "editsImages": images is not None,
        "prompt": {
            "maxLength": spec.prompt.max_length,
            "minLength": spec.prompt.min_length,
            "required": not spec.prompt.optional_with_images,
        },
        "imageInput": {"min": 1 if images.required else 0, "max": images.max_count} if images else None,
        "fields": {name: param.describe() for name, param in spec.fields.items()},
        "options": {name: param.describe() for name, param in spec.options.items()},
        "defaults": {name: param.default for name, param in spec.fields.items() if param.default is not None},
    }


CATALOGUE = {"default": DEFAULT_MODEL, "models": [describe(spec) for spec in MODEL_LIST]}


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(CATALOGUE)


routes = [Route("/api/images/models", list_models, methods=["GET"])]
