"""Turn a client's generate request into an upstream payload, or say exactly what is wrong.

Pure: a rejected request has touched nothing when BadRequest is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.errors import BadRequest
from app.providers.kie_models import DEFAULT_MODEL, MODELS, ModelSpec

KNOWN_FIELDS = frozenset({"prompt", "model", "imageInput", "aspectRatio", "resolution", "outputFormat"})


@dataclass(frozen=True)
class Submission:
    model: ModelSpec
    input: dict[str, Any]

    @property
    def payload(self) -> dict[str, Any]:
        """The upstream request body, less the per-task callBackUrl."""
        return {"model": self.model.name, "input": self.input}


def parse_generate(body: Any) -> Submission:
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'")
    model = _model(body.get("model"))
    payload: dict[str, Any] = {"prompt": _prompt(body.get("prompt"), model)}
    payload.update(_choices(body, model))
    payload.update(_images(body.get("imageInput"), model))
    return Submission(model, payload)


def _model(value: Any) -> ModelSpec:
    if value is None:
        return MODELS[DEFAULT_MODEL]
    if not isinstance(value, str):
        raise BadRequest("model must be a string")
    if value not in MODELS:
        raise BadRequest(f"Unknown model '{value}'; supported models: {', '.join(MODELS)}")
    return MODELS[value]


def _prompt(value: Any, model: ModelSpec) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRequest("Prompt is required")
    if not isinstance(value, str):
        raise BadRequest("prompt must be a string")
    if len(value) > model.prompt_max:
        raise BadRequest(
            f"prompt is too long for model {model.name}: {len(value)} characters, maximum {model.prompt_max}"
        )
    return value


def _choices(body: dict[str, Any], model: ModelSpec) -> dict[str, str]:
    chosen = {}
    for request_field in ("aspectRatio", "resolution", "outputFormat"):
        value = body.get(request_field)
        spec = model.choices.get(request_field)
        if spec is None:
            if value is not None:
                raise BadRequest(f"{request_field} is not supported by model {model.name}")
            continue
        if value is None:
            value = spec.default
        elif not isinstance(value, str):
            raise BadRequest(f"{request_field} must be a string")
        elif value not in spec.values:
            raise BadRequest(
                f"{request_field} '{value}' is not supported by model {model.name}; "
                f"choose one of: {', '.join(spec.values)}"
            )
        if value is not None:
            chosen[spec.input_name] = value
    return chosen


def _images(value: Any, model: ModelSpec) -> dict[str, list[str]]:
    urls = [] if value is None else value
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise BadRequest("imageInput must be an array of URL strings")
    spec = model.images
    if spec is None:
        if urls:
            raise BadRequest(f"imageInput is not supported by model {model.name}")
        return {}
    if spec.required and not urls:
        raise BadRequest(f"imageInput needs at least one image URL for model {model.name}")
    if len(urls) > spec.max_count:
        raise BadRequest(f"imageInput has {len(urls)} images; model {model.name} accepts at most {spec.max_count}")
    for index, url in enumerate(urls):
        if not is_absolute_http_url(url):
            raise BadRequest(f"imageInput[{index}] must be an absolute http(s) URL")
    return {spec.input_name: urls}


def is_absolute_http_url(value: str) -> bool:
    if any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
