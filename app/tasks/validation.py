"""Turn a client's generate request into an upstream request body, or say exactly what is wrong.

Pure: a rejected request has touched nothing when BadRequest is raised.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from app.errors import BadRequest
from app.outbox.webhooks import check_url_form
from app.providers.catalogue import DEFAULT_MODEL, MODELS, ModelSpec
from app.providers.params import Param, is_absolute_http_url

# Request fields every model may accept (each model's table says which it does).
COMMON_FIELDS = ("aspectRatio", "resolution", "outputFormat", "negativePrompt", "seed", "numImages")
KNOWN_FIELDS = frozenset({"prompt", "model", "imageInput", "options", "webhookUrl", *COMMON_FIELDS})


@dataclass(frozen=True)
class Submission:
    model: ModelSpec
    payload: dict[str, Any]  # the upstream request body, less the per-task callback URL
    webhook_url: str | None = None
    images_requested: int = 1
    # What Idempotency-Key compares instead, when the payload holds URLs made for this very request
    # (input images uploaded on the client's behalf), which a retry of it would not make again.
    request_identity: str | None = None

    def fingerprint(self) -> str:
        """Equal for equal requests, whatever the JSON key order: what Idempotency-Key compares."""
        if self.request_identity is not None:
            return self.request_identity
        canonical = json.dumps([self.payload, self.webhook_url], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_generate(body: Any) -> Submission:
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'")
    model = _model(body.get("model"))
    images = _images(body.get("imageInput"), model)
    values: dict[str, Any] = _prompt(body.get("prompt"), model, has_images=bool(images))
    values |= images
    for name in COMMON_FIELDS:
        values |= _field(name, body.get(name), model)
    values |= _options(body.get("options"), model)
    webhook_url = None if body.get("webhookUrl") is None else check_url_form(body["webhookUrl"])
    images = body.get("numImages") if isinstance(body.get("numImages"), int) else 1
    return Submission(model, model.body(values), webhook_url, images)


def _model(value: Any) -> ModelSpec:
    if value is None:
        return MODELS[DEFAULT_MODEL]
    if not isinstance(value, str):
        raise BadRequest("model must be a string")
    if value not in MODELS:
        raise BadRequest(f"Unknown model '{value}'; GET /api/images/models lists the supported models")
    return MODELS[value]


def _prompt(value: Any, model: ModelSpec, *, has_images: bool) -> dict[str, str]:
    spec = model.prompt
    if value is None or (isinstance(value, str) and not value.strip()):
        if spec.optional_with_images and has_images:
            return {}
        raise BadRequest("Prompt is required")
    if not isinstance(value, str):
        raise BadRequest("prompt must be a string")
    if len(value) > spec.max_length:
        raise BadRequest(
            f"prompt is too long for model {model.name}: {len(value)} characters, maximum {spec.max_length}"
        )
    if len(value) < spec.min_length:
        raise BadRequest(
            f"prompt is too short for model {model.name}: {len(value)} characters, minimum {spec.min_length}"
        )
    return {spec.upstream: value}


def _field(name: str, value: Any, model: ModelSpec) -> dict[str, Any]:
    param = model.fields.get(name)
    if param is None:
        if value is not None:
            raise BadRequest(f"{name} is not supported by model {model.name}")
        return {}
    return _convert(name, value, param, model)


def _options(value: Any, model: ModelSpec) -> dict[str, Any]:
    given = {} if value is None else value
    if not isinstance(given, dict):
        raise BadRequest("options must be an object")
    for name in given:
        if name not in model.options:
            supported = ", ".join(model.options) or "none"
            raise BadRequest(f"options.{name} is not supported by model {model.name}; supported options: {supported}")
    converted: dict[str, Any] = {}
    for name, param in model.options.items():  # also sends option defaults the provider requires
        converted |= _convert(f"options.{name}", given.get(name), param, model)
    return converted


def _convert(label: str, value: Any, param: Param, model: ModelSpec) -> dict[str, Any]:
    if value is None:
        value = param.default
        if value is None:
            return {}
    try:
        return {param.upstream: param.convert(value)}
    except ValueError as exc:
        raise BadRequest(f"{label} {shown(value)} is not valid for model {model.name}: {exc}") from None


def shown(value: Any) -> str:
    """A value as a message quotes it: JSON with single quotes, cut short past 40 characters."""
    shown = json.dumps(value).replace('"', "'")
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _images(value: Any, model: ModelSpec) -> dict[str, Any]:
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
    if not urls:
        return {}
    return {spec.upstream: urls[0] if spec.single else urls}
