"""Local images as generation input: checked here, stored by Kie's file upload API for 3 days."""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import timedelta
from typing import Any

from app.deps import Deps
from app.errors import BadRequest, NotConfigured, PayloadTooLarge, ProviderRejected, ProviderUnavailable, Unavailable
from app.providers.kie import KieClient

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # most models take input images up to 10 MB
UPSTREAM_LIFETIME = timedelta(days=3)
# Magic numbers of the formats every Kie model accepts as input.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png", "png"), (b"\xff\xd8\xff", "image/jpeg", "jpg"))


def sniff(content: bytes) -> tuple[str, str]:
    """(mime type, extension) from the bytes themselves; the client's claim is not trusted."""
    for magic, mime_type, extension in SIGNATURES:
        if content.startswith(magic):
            return mime_type, extension
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp", "webp"
    raise BadRequest("file must be a PNG, JPEG or WebP image")


def decode_base64(value: Any) -> bytes:
    """Raw base64 or a data: URL."""
    if not isinstance(value, str) or not value:
        raise BadRequest("data must be a base64 string or a data: URL")
    encoded = value.split(",", 1)[1] if value.startswith("data:") else value
    if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise PayloadTooLarge(f"Image too large (limit {MAX_UPLOAD_BYTES} bytes)")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("data is not valid base64") from None


async def upload_image(deps: Deps, content: bytes) -> dict[str, Any]:
    if not content:
        raise BadRequest("file is empty")
    if len(content) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"Image too large (limit {MAX_UPLOAD_BYTES} bytes)")
    mime_type, extension = sniff(content)
    client = deps.providers.get("kie")
    if not isinstance(client, KieClient):
        raise NotConfigured("Kie.ai API key not configured")
    file_name = f"{secrets.token_urlsafe(12)}.{extension}"
    try:
        stored = await client.upload(content, file_name, mime_type)
    except ProviderUnavailable as exc:
        raise Unavailable(f"Kie.ai file upload unavailable: {exc.message}") from None
    except ProviderRejected as exc:
        raise BadRequest(f"Kie.ai error: {exc.message}") from None
    expires = stored.get("expiresAt") or (deps.clock() + UPSTREAM_LIFETIME).isoformat()
    return {
        "url": stored["downloadUrl"],
        "fileName": file_name,
        "mimeType": mime_type,
        "size": len(content),
        "expiresAt": expires,
    }
