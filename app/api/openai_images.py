"""OpenAI's Images API over ordinary tasks: POST /v1/images/generations (JSON) and /v1/images/edits (multipart).

Each request makes one task, validated, limited, idempotent and webhooked like any other; it then waits for the
task as `Prefer: wait` does, holding no database connection, for up to OPENAI_WAIT_S, and answers in OpenAI's
shape (app/tasks/openai_compat.py). An edit's files become input images the provider fetches: checked, then
relayed to its file upload API like POST /api/uploads does.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import time
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.auth import owner_of
from app.api.body import parsed_form, read_body, read_json
from app.api.images import counted_submission, idempotency_key
from app.deps import Deps
from app.errors import BadRequest, GatewayError
from app.inbound.untrusted import unstorable
from app.outbox.results import read_result
from app.providers.catalogue import MODELS
from app.tasks import submit
from app.tasks.openai_compat import (
    NO_RETRY,
    ImagesRequest,
    form_params,
    images_answer,
    images_request,
    invalid,
    unfinished,
    validated,
)
from app.tasks.status import wait_for_status
from app.uploads import ImageKind, black_where_transparent, inspect_image, relay_image

TASK_HEADER = "X-Imagehook-Task-Id"
MAX_EDIT_BYTES = 64 * 1024 * 1024  # several input images of up to 10 MiB each, and a mask
MAX_EDIT_IMAGES = max(spec.images.max_count for spec in MODELS.values() if spec.images is not None)
MAX_EDIT_FIELDS = 32
# Stands in for an upload while the request is checked, named by the file's digest: a retry of the same request
# checks, and is compared for Idempotency-Key, the same. The .invalid domain can never be fetched.
PLACEHOLDER = "https://upload.invalid/sha256/"


async def generations(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    owner, key = await owner_of(request), idempotency_key(request)
    params = await read_json(request, deps.settings.max_body_bytes)
    with counted_submission() as counted:
        asked = images_request(params)
        submission = validated(asked.body)
        counted.model = submission.model.name
        task_id = await submit.submit_task(deps, api_key_id=owner, submission=submission, idempotency_key=key)
    return await answer(deps, owner, task_id, asked.response_format, retry_safe=key is not None)


async def edits(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    owner, key = await owner_of(request), idempotency_key(request)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise invalid("Send the edit as multipart/form-data: image files, a prompt and the other fields", None)
    raw = await read_body(request, MAX_EDIT_BYTES)
    async with parsed_form(request, raw, max_files=MAX_EDIT_IMAGES + 1, max_fields=MAX_EDIT_FIELDS) as form:
        fields, images, mask = await edit_parts(form)
    with counted_submission() as counted:
        asked = images_request(form_params(fields), edit=True, images=len(images), mask=mask is not None)
        counted.model = asked.body["model"]
        task_id = await submit_edit(deps, owner, key, asked, images, mask)
    return await answer(deps, owner, task_id, asked.response_format, retry_safe=key is not None)


async def edit_parts(form: FormData) -> tuple[dict[str, str], list[bytes], bytes | None]:
    """The text fields, the images (`image`, also `image[]` as the SDKs send several) and the mask."""
    fields: dict[str, str] = {}
    images, masks = [], []
    for name, value in form.multi_items():
        if name in ("image", "image[]", "mask"):
            (masks if name == "mask" else images).append(await file_content(name, value))
        elif isinstance(value, UploadFile):
            raise invalid(f"{name} must be a text field, not a file", name)
        elif name in fields:
            raise invalid(f"{name} must appear once", name)
        else:
            fields[name] = value
    if len(masks) > 1:
        raise invalid("mask must appear once", "mask")
    if problem := unstorable(fields):  # as read_json refuses for a JSON body
        raise invalid(f"Request body: {problem}", next((name for name in fields if problem.startswith(name)), None))
    return fields, images, masks[0] if masks else None


async def file_content(name: str, value: UploadFile | str) -> bytes:
    param = name.removesuffix("[]")
    if not isinstance(value, UploadFile):
        raise invalid(f"{param} must be a file (its part needs a filename), not a text value", param)
    return await value.read()


async def submit_edit(
    deps: Deps, owner: int, key: str | None, asked: ImagesRequest, images: list[bytes], mask: bytes | None
) -> str:
    """Every check first, on stand-ins for the files and then on the files themselves as images; a retry with
    the same Idempotency-Key finds its task before anything is uploaded again. Only then are the files relayed
    to the provider's file upload API, and the task, with their URLs, is submitted."""
    stand_in = None if mask is None else placeholder(mask)
    probe = validated(asked.with_images([placeholder(image) for image in images], stand_in))
    files = [("image", image) for image in images] + ([("mask", mask)] if mask is not None else [])
    kinds = [await inspected(param, content) for param, content in files]
    if mask is not None:
        files[-1] = ("mask", await inspected_mask(mask, images[0]))
    if key and (earlier := await submit.idempotent_task(deps, owner, key, probe.fingerprint())):
        return earlier
    await submit.check_submission(deps, owner, probe)
    relays = (relay_image(deps, content, kind) for (_, content), kind in zip(files, kinds, strict=True))
    urls = [upload["url"] for upload in await asyncio.gather(*relays)]
    submission = validated(asked.with_images(urls[: len(images)], urls[len(images)] if mask is not None else None))
    identified = dataclasses.replace(submission, request_identity=probe.fingerprint())
    return await submit.submit_task(deps, api_key_id=owner, submission=identified, idempotency_key=key)


def placeholder(content: bytes) -> str:
    return PLACEHOLDER + hashlib.sha256(content).hexdigest()


async def inspected(param: str, content: bytes) -> ImageKind:
    try:
        return await asyncio.to_thread(inspect_image, content)
    except BadRequest as exc:
        raise invalid(f"{param}: {exc.message}", param) from None


async def inspected_mask(mask: bytes, image: bytes) -> bytes:
    try:
        return await asyncio.to_thread(black_where_transparent, mask, image)
    except BadRequest as exc:
        raise invalid(exc.message, "mask") from None


async def answer(deps: Deps, owner: int, task_id: str, response_format: str, *, retry_safe: bool) -> JSONResponse:
    """The task's images once it succeeded; otherwise OpenAI's error, which a retry repeats only with the same
    Idempotency-Key (without one it would make, and charge, a new task)."""
    started = time.monotonic()
    try:
        waited = await wait_for_status(deps, api_key_id=owner, task_id=task_id, wait_s=deps.settings.openai_wait_s)
        status = json.loads(waited.body)
        # A shutdown ends the wait early, so the time it took is what the client is told.
        if (problem := unfinished(status, round(time.monotonic() - started, 1))) is not None:
            raise problem
        b64 = await b64_images(deps, owner, status) if response_format == "b64_json" else None
    except GatewayError as exc:
        exc.headers = exc.headers | {TASK_HEADER: task_id} | ({} if retry_safe else NO_RETRY)
        raise
    return JSONResponse(images_answer(status, b64), headers={TASK_HEADER: task_id})


async def b64_images(deps: Deps, owner: int, status: dict[str, Any]) -> list[str]:
    task_id = status["taskId"]
    reads = (read_result(deps, owner, task_id, n, url) for n, url in enumerate(status["imageUrls"]))
    contents = await asyncio.gather(*reads)
    # Off the event loop: a large image takes a while to encode.
    return [(await asyncio.to_thread(base64.b64encode, content)).decode() for content in contents]


routes = [
    Route("/v1/images/generations", generations, methods=["POST"]),
    Route("/v1/images/edits", edits, methods=["POST"]),
]
