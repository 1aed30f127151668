"""OpenAI's Images API in imagehook's terms (pure): its model names, sizes and parameters become an ordinary
generate request (which app/tasks/validation.py then checks like any other), a finished task becomes its answer,
and every error takes its shape, `{"error": {"message", "type", "param", "code"}}`, with its status codes.

OpenAIError is a GatewayError that also names the parameter at fault and OpenAI's error code; the app's error
handlers render every error on a /v1 path through `error_answer` (app/main.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.errors import BadRequest, GatewayError
from app.providers.catalogue import DEFAULT_MODEL, MODELS, ModelSpec
from app.tasks import openai_sizes
from app.tasks.validation import Submission, parse_generate, shown

OPENAI_PREFIX = "/v1/"
# The SDKs retry 409, 429 and 5xx answers unless told not to; a retry that would make (and charge) a new task,
# or can never succeed, is refused this way.
NO_RETRY = {"x-should-retry": "false"}


class OpenAIError(GatewayError):
    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status, headers)
        self.param, self.code = param, code


def invalid(message: str, param: str | None, code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(message, 400, param=param, code=code)


@dataclass(frozen=True)
class Alias:
    """The imagehook models that answer to one of OpenAI's model names, with OpenAI's defaults for it."""

    generate: str
    edit: str
    default_size: str | None = None  # None: the imagehook model's own default ratio and resolution
    default_format: str = "url"  # response_format when the request names none


ALIASES = {
    # OpenAI's GPT Image models, which answer with base64 unless asked otherwise: gpt4o-image is GPT Image 1
    # (masks included), and the gpt-image/1.5 models are GPT Image 1.5.
    "gpt-image-1": Alias("gpt4o-image", "gpt4o-image", default_format="b64_json"),
    "gpt-image-1.5": Alias("gpt-image/1.5-text-to-image", "gpt-image/1.5-image-to-image", default_format="b64_json"),
    # DALL·E's sizes default to a square. DALL·E 3 is the flagship: imagehook's default model, which also edits.
    "dall-e-3": Alias(DEFAULT_MODEL, DEFAULT_MODEL, default_size="1024x1024"),
    # DALL·E 2 is the fast one that makes several images a request, and the one that edits with a mask.
    "dall-e-2": Alias("google/imagen4-fast", "gpt4o-image", default_size="1024x1024"),
}

PARAMS = frozenset({"model", "prompt", "n", "size", "quality", "output_format", "response_format"})
IGNORED = frozenset({"user", "safety_identifier"})  # for OpenAI's abuse monitoring; nothing here to give them to
DEFAULT_ONLY = {"background": "auto", "moderation": "auto", "stream": False}  # accepted only as what they default to
MAX_N = 10
QUALITY_TIERS = {"low": "low", "medium": "medium", "high": "high", "standard": "medium", "hd": "high"}
FORMATS = {"png": ("png",), "jpeg": ("jpeg", "jpg"), "webp": ("webp",)}
RESPONSE_FORMATS = ("url", "b64_json")
MASK_OPTION = "maskUrl"  # the option through which a model takes an edit mask: black edits, white keeps
# A request field that validation.py names first in a message, and the OpenAI parameter it came from.
VALIDATION_PARAMS = (
    ("prompt", "prompt"),
    ("imageInput", "image"),
    (f"options.{MASK_OPTION}", "mask"),
    ("numImages", "n"),
    ("aspectRatio", "size"),
    ("resolution", "size"),
    ("outputFormat", "output_format"),
    ("options.quality", "quality"),
)


@dataclass(frozen=True)
class ImagesRequest:
    body: dict[str, Any]  # an imagehook generate request, less the input images of an edit
    response_format: str

    def with_images(self, urls: Sequence[str], mask_url: str | None = None) -> dict[str, Any]:
        body = self.body | {"imageInput": list(urls)}
        if mask_url is not None:
            body["options"] = body.get("options", {}) | {MASK_OPTION: mask_url}
        return body


def images_request(params: Any, *, edit: bool = False, images: int = 0, mask: bool = False) -> ImagesRequest:
    """A generations body, or an edit's fields with how many images (and whether a mask) came with them."""
    if not isinstance(params, dict):
        raise invalid("Request body must be a JSON object", None, None)
    check_names(params)
    model, alias = chosen_model(params.get("model"), edit=edit)
    if edit:
        check_inputs(model, images, mask)
    size = params.get("size")
    if size is None and alias is not None:
        size = alias.default_size
    body = {"model": model.name, "prompt": params.get("prompt")}
    body |= count_fields(params.get("n"), model) | size_fields(size, model) | format_fields(params, model)
    if quality := quality_option(params.get("quality"), model):
        body["options"] = quality
    return ImagesRequest(body, response_format(params.get("response_format"), alias))


def check_names(params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        if name in IGNORED:
            if value is not None and not isinstance(value, str):
                raise invalid(f"{name} must be a string", name)
        elif name in DEFAULT_ONLY:
            if value is not None and value != DEFAULT_ONLY[name]:
                raise invalid(
                    f"{name} {shown(value)} is not supported: only {DEFAULT_ONLY[name]!r}", name, "unsupported_value"
                )
        elif name not in PARAMS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")


def chosen_model(value: Any, *, edit: bool) -> tuple[ModelSpec, Alias | None]:
    if value is None:
        return MODELS[DEFAULT_MODEL], None
    if not isinstance(value, str):
        raise invalid("model must be a string", "model")
    alias = ALIASES.get(value)
    name = (alias.edit if edit else alias.generate) if alias else value
    if name not in MODELS:
        known = ", ".join(ALIASES)
        message = f"Unknown model {shown(value)}: GET /api/images/models lists the models; also {known}"
        raise invalid(message, "model", "model_not_found")
    spec = MODELS[name]
    if edit and spec.images is None:
        raise invalid(f"model {name} takes no input images, so it cannot edit", "model")
    if not edit and spec.images is not None and spec.images.required:
        raise invalid(f"model {name} needs input images: send them to /v1/images/edits", "model")
    return spec, alias


def check_inputs(model: ModelSpec, images: int, mask: bool) -> None:
    assert model.images is not None  # chosen_model refuses edits with models that take no images
    if images == 0:
        raise invalid("image is required: one or more image files", "image", "missing_required_parameter")
    if images > model.images.max_count:
        raise invalid(f"image has {images} files; model {model.name} takes at most {model.images.max_count}", "image")
    if mask and MASK_OPTION not in model.options:
        takers = ", ".join(spec.name for spec in MODELS.values() if MASK_OPTION in spec.options)
        raise invalid(f"mask is not supported by model {model.name}; models that take one: {takers}", "mask")
    if mask and images > 1:
        raise invalid("mask applies to a single image: send one image with it", "mask")


def count_fields(n: Any, model: ModelSpec) -> dict[str, Any]:
    """n images come from one task: the model's own batch size (numImages), never several tasks."""
    if n is None:
        return {}
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise invalid(f"n must be an integer from 1 to {MAX_N}", "n")
    param = model.fields.get("numImages")
    if param is None:
        if n != 1:
            raise invalid(f"n must be 1 for model {model.name}: it makes one image a request", "n")
        return {}
    try:
        param.convert(n)
    except ValueError as exc:
        raise invalid(f"n {n} is not valid for model {model.name}: {exc}", "n") from None
    return {"numImages": n}


def size_fields(size: Any, model: ModelSpec) -> dict[str, str]:
    try:
        return openai_sizes.size_fields(size, model)
    except ValueError as exc:
        raise invalid(str(exc), "size") from None


def quality_option(quality: Any, model: ModelSpec) -> dict[str, str]:
    if quality is None or quality == "auto":
        return {}
    if not isinstance(quality, str) or quality not in QUALITY_TIERS:
        raise invalid(
            f"quality {shown(quality)} is not valid: must be one of: auto, {', '.join(QUALITY_TIERS)}", "quality"
        )
    param = model.options.get("quality")
    if param is None:
        if quality == "standard":
            return {}
        raise invalid(f"quality '{quality}' is not supported by model {model.name}: it has one, auto", "quality")
    tier = QUALITY_TIERS[quality]
    if tier not in (param.values or {}):
        offered = ", ".join(param.values or {})
        raise invalid(f"quality '{quality}' is not offered by model {model.name}: it offers {offered}", "quality")
    return {"quality": tier}


def format_fields(params: Mapping[str, Any], model: ModelSpec) -> dict[str, str]:
    wanted = params.get("output_format")
    if wanted is None:
        return {}
    if not isinstance(wanted, str) or wanted not in FORMATS:
        raise invalid(f"output_format {shown(wanted)} is not valid: must be one of: png, jpeg, webp", "output_format")
    param = model.fields.get("outputFormat")
    if param is None:
        raise invalid(f"output_format is not supported by model {model.name}: it makes one format", "output_format")
    offered = param.values or {}
    for name in FORMATS[wanted]:
        if name in offered:
            return {"outputFormat": name}
    names = ", ".join(str(name) for name in offered)
    raise invalid(f"output_format '{wanted}' is not offered by model {model.name}: it offers {names}", "output_format")


def response_format(value: Any, alias: Alias | None) -> str:
    if value is None:
        return alias.default_format if alias else "url"
    if value not in RESPONSE_FORMATS:
        raise invalid(f"response_format {shown(value)} is not valid: must be url or b64_json", "response_format")
    return value


def form_params(fields: Mapping[str, str]) -> dict[str, Any]:
    """An edit's multipart text fields as the JSON values a generations body would hold."""
    params: dict[str, Any] = dict(fields)
    if "n" in params:
        params["n"] = int(params["n"]) if params["n"].isascii() and params["n"].isdigit() else params["n"]
    if "stream" in params:
        params["stream"] = {"true": True, "false": False}.get(params["stream"], params["stream"])
    return params


def validated(body: dict[str, Any]) -> Submission:
    """The ordinary validation of a generate request; its refusals name the OpenAI parameter at fault."""
    try:
        return parse_generate(body)
    except BadRequest as exc:
        lowered = exc.message.lower()
        param = next((param for field, param in VALIDATION_PARAMS if lowered.startswith(field.lower())), None)
        raise invalid(exc.message, param) from None


def images_answer(status: Mapping[str, Any], b64_images: Sequence[str] | None) -> dict[str, Any]:
    """A successful task's answer: its images as URLs (its status's imageUrls), or as base64 when given."""
    created = int(datetime.fromisoformat(status["createdAt"]).timestamp())
    if b64_images is not None:
        return {"created": created, "data": [{"b64_json": image} for image in b64_images]}
    return {"created": created, "data": [{"url": url} for url in status["imageUrls"]]}


def unfinished(status: Mapping[str, Any], waited_s: float) -> OpenAIError | None:
    """What to answer for a task that did not succeed (None if it did): it failed, or it is still running."""
    task_id = status["taskId"]
    if status["state"] == "success":
        return None
    if status["state"] == "fail":
        reason = status.get("failMsg") or "the provider gave no reason"
        return OpenAIError(f"Image generation failed: {reason}", 500, code="generation_failed")
    follow = f"GET /api/images/status?taskId={task_id} follows it"
    return OpenAIError(f"Task {task_id} is not finished after {waited_s:g} s; {follow}", 504, code="timeout")


def error_answer(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, extra headers) of an error as OpenAI's API gives it."""
    headers: dict[str, str] = NO_RETRY if status == 409 else {}
    if status == 402:  # OpenAI answers a spent quota with a 429, which no retry can help
        status, kind, code, headers = 429, "insufficient_quota", "insufficient_quota", NO_RETRY
    elif status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status == 401:
        kind, code = "invalid_request_error", code or "invalid_api_key"
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers
