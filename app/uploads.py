"""Local images as generation input: checked here, stored by a provider's file upload API (Kie.ai's, for 3 days).

Only bytes that fully decode as the PNG, JPEG or WebP their first bytes announce, within sane dimensions,
are relayed; the base64 and data: URL forms are parsed strictly, so malformed input is a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# The plugins are imported directly (not through Image.open) so that the size is checked before any pixels
# are allocated, by one rule with one message; importing them now also avoids Pillow's lazy plugin import
# racing between threads.
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from app.deps import Deps
from app.errors import BadRequest, PayloadTooLarge, ProviderRejected, ProviderUnavailable, Unavailable
from app.providers.base import Uploads

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # most models take input images up to 10 MB
MAX_ENCODED_CHARS = MAX_UPLOAD_BYTES * 4 // 3 + 4
# A 10 MiB PNG of one colour can claim billions of pixels; 50 MP covers any camera photo that fits the byte cap
# while bounding the decoded bitmap (~200 MB as RGBA).
MAX_SIDE = 16384
MAX_PIXELS = 50_000_000
UPSTREAM_LIFETIME = timedelta(days=3)
# MIME base64 (what `base64` prints) breaks lines every 76 characters; nothing else outside the alphabet passes.
LINE_BREAKS = str.maketrans("", "", "\r\n")
# What Pillow raises on bytes it cannot decode (its openers turn parsing slips into SyntaxError), and its own
# decompression-bomb guard, should a Pillow version apply it before the stricter limits here.
UNDECODABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def webp_canvas(content: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP header declares (lossy, lossless or extended), without decoding."""
    chunk = content[12:16]
    if chunk == b"VP8 " and content[23:26] == b"\x9d\x01\x2a" and len(content) >= 30:
        return _le(content[26:28]) & 0x3FFF, _le(content[28:30]) & 0x3FFF
    if chunk == b"VP8L" and content[20:21] == b"\x2f" and len(content) >= 25:
        bits = _le(content[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(content) >= 30:
        return _le(content[24:27]) + 1, _le(content[27:30]) + 1
    return None


def _le(field: bytes) -> int:
    return int.from_bytes(field, "little")


@dataclass(frozen=True)
class ImageKind:
    name: str
    mime_type: str
    extension: str
    magic: re.Pattern[bytes]
    opener: Callable[[io.BytesIO], ImageFile.ImageFile]
    # Pillow's WebP opener allocates the whole canvas as it opens, so its size must be read from the header first.
    header_size: Callable[[bytes], tuple[int, int] | None] | None = None


# The formats every model accepts as input, told apart by their magic numbers.
KINDS = (
    ImageKind("PNG", "image/png", "png", re.compile(rb"\x89PNG\r\n\x1a\n"), PngImagePlugin.PngImageFile),
    ImageKind("JPEG", "image/jpeg", "jpg", re.compile(rb"\xff\xd8\xff"), JpegImagePlugin.JpegImageFile),
    ImageKind(
        "WebP",
        "image/webp",
        "webp",
        re.compile(rb"RIFF.{4}WEBP", re.DOTALL),
        WebPImagePlugin.WebPImageFile,
        webp_canvas,
    ),
)


def kind_of(content: bytes) -> ImageKind:
    """The format the bytes themselves announce; the client's claim is not trusted."""
    for kind in KINDS:
        if kind.magic.match(content):
            return kind
    raise BadRequest("file must be a PNG, JPEG or WebP image")


def sniff(content: bytes) -> tuple[str, str]:
    """(mime type, extension) from the first bytes alone."""
    kind = kind_of(content)
    return kind.mime_type, kind.extension


def check_dimensions(size: tuple[int, int]) -> None:
    width, height = size
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise BadRequest(
            f"image is {width}x{height} pixels; the limit is 1 to {MAX_SIDE} per side and {MAX_PIXELS} in total"
        )


def inspect_image(content: bytes) -> ImageKind:
    """The kind of an image fit to relay, or BadRequest / PayloadTooLarge. Decodes every pixel: run it in a thread."""
    if not content:
        raise BadRequest("file is empty")
    if len(content) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"Image too large (limit {MAX_UPLOAD_BYTES} bytes)")
    kind = kind_of(content)
    if kind.header_size:
        size = kind.header_size(content)
        if size is None:
            raise BadRequest(f"file is not a valid {kind.name} image: no image size in its header")
        check_dimensions(size)
    try:
        _decode(kind, content)
    except UNDECODABLE as exc:
        raise BadRequest(f"file is not a valid {kind.name} image: {exc}") from None
    return kind


def _decode(kind: ImageKind, content: bytes) -> None:
    with kind.opener(io.BytesIO(content)) as image:
        check_dimensions(image.size)  # before any pixel is allocated, so a decompression bomb costs nothing
        image.verify()  # PNG: each chunk's checksum through IEND, which load() does not insist on
    with kind.opener(io.BytesIO(content)) as image:  # verify() leaves an image unusable
        image.load()


def decode_base64(value: Any) -> bytes:
    """The bytes of raw base64 or of a base64 data: URL (data:image/png;base64,...)."""
    if not isinstance(value, str) or not value:
        raise BadRequest("data must be a base64 string or a data: URL")
    if len(value) > MAX_ENCODED_CHARS:
        raise PayloadTooLarge(f"Image too large (limit {MAX_UPLOAD_BYTES} bytes)")
    encoded = _data_url_payload(value) if value[:5].lower() == "data:" else value
    try:
        content = base64.b64decode(encoded.translate(LINE_BREAKS), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"data is not valid base64: {exc}") from None
    if not content:
        raise BadRequest("data is empty")
    return content


def _data_url_payload(url: str) -> str:
    header, comma, payload = url.partition(",")
    if not comma:
        raise BadRequest("data: URL has no comma before its payload")
    if not header.lower().endswith(";base64"):
        raise BadRequest("data: URL must be base64-encoded (data:image/png;base64,...)")
    return payload


def black_where_transparent(mask: bytes, image: bytes) -> bytes:
    """An edit mask as OpenAI's Images API takes one (a PNG of the image's size whose fully transparent pixels
    mark the area to change) redrawn as a black-and-white PNG: black where to edit, white where to keep.
    Both were checked by inspect_image. Decodes every pixel: run it in a thread."""
    if kind_of(mask).name != "PNG":
        raise BadRequest("mask must be a PNG image")
    with PngImagePlugin.PngImageFile(io.BytesIO(mask)) as opened:
        if "A" not in opened.getbands() and "transparency" not in opened.info:
            raise BadRequest("mask must have an alpha channel: its fully transparent pixels mark the area to edit")
        alpha = opened.convert("RGBA").getchannel("A")
    with kind_of(image).opener(io.BytesIO(image)) as opened:
        size = opened.size
    if alpha.size != size:
        raise BadRequest(
            f"mask is {alpha.width}x{alpha.height} pixels; it must be the image's size, {size[0]}x{size[1]}"
        )
    buffer = io.BytesIO()
    alpha.point(lambda value: 255 if value else 0).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload_image(deps: Deps, content: bytes) -> dict[str, Any]:
    return await relay_image(deps, content, await asyncio.to_thread(inspect_image, content))


async def relay_image(deps: Deps, content: bytes, kind: ImageKind) -> dict[str, Any]:
    """Store an image inspect_image found to be of `kind` with the provider's file upload API."""
    provider = deps.providers.require(Uploads)
    file_name = f"{secrets.token_urlsafe(12)}.{kind.extension}"
    # The original bytes go upstream, not a re-encoding: decoding them proved they are the image they claim, and
    # re-encoding would cost JPEG quality, could push a PNG past the byte cap, and would drop the colour profile
    # and EXIF orientation the models read.
    try:
        stored = await provider.upload(content, file_name, kind.mime_type)
    except ProviderUnavailable as exc:
        raise Unavailable(f"{provider.label} file upload unavailable: {exc.message}") from None
    except ProviderRejected as exc:
        raise BadRequest(f"{provider.label} error: {exc.message}") from None
    expires = stored.get("expiresAt") or (deps.clock() + UPSTREAM_LIFETIME).isoformat()
    return {
        "url": stored["downloadUrl"],
        "fileName": file_name,
        "mimeType": kind.mime_type,
        "size": len(content),
        "expiresAt": expires,
    }
