"""The rules an upload must pass before it is relayed: bytes that fully decode as the PNG, JPEG or WebP their
magic announces, of sane dimensions, sent raw or as base64 / a base64 data: URL. Anything else is a
BadRequest (400) or PayloadTooLarge (413), never another exception."""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, WebPImagePlugin

from app.errors import BadRequest, PayloadTooLarge
from app.uploads import KINDS, MAX_PIXELS, MAX_SIDE, MAX_UPLOAD_BYTES, decode_base64, inspect_image

PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
NAMES = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def encoded(pillow_format: str, size: tuple[int, int] = (6, 4), mode: str = "RGB", **options: Any) -> bytes:
    """A real image, noisy so that every format needs all of its bytes to decode."""
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert(mode).save(buffer, format=pillow_format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width x height, with a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        PNG_MAGIC + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    )


def webp_claiming(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def vp8x_claiming(width: int, height: int) -> bytes:
    """An extended WebP header claiming a width x height canvas."""
    sizes = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return webp_claiming(b"VP8X", b"\0\0\0\0" + sizes)


def vp8l_claiming(width: int, height: int) -> bytes:
    """A lossless WebP header claiming width x height."""
    bits = (width - 1) | (height - 1) << 14
    return webp_claiming(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\0" * 16)


def refusal(content: bytes) -> str:
    with pytest.raises(BadRequest) as refused:
        inspect_image(content)
    return refused.value.message


REAL = {
    "png-rgb": ("PNG", encoded("PNG")),
    "png-rgba": ("PNG", encoded("PNG", mode="RGBA")),
    "png-palette": ("PNG", encoded("PNG", mode="P")),
    "png-grey-strip": ("PNG", encoded("PNG", size=(16, 1), mode="L")),
    "jpeg": ("JPEG", encoded("JPEG", quality=90)),
    "jpeg-progressive-grey": ("JPEG", encoded("JPEG", mode="L", progressive=True)),
    "webp-lossy": ("WEBP", encoded("WEBP")),
    "webp-lossless": ("WEBP", encoded("WEBP", mode="RGBA", lossless=True)),
}
BODIES = {"PNG": encoded("PNG"), "JPEG": encoded("JPEG"), "WEBP": encoded("WEBP")}
MAGICS = {"PNG": PNG_MAGIC, "JPEG": JPEG_MAGIC, "WEBP": BODIES["WEBP"][:16]}


@pytest.mark.parametrize(("pillow_format", "content"), REAL.values(), ids=REAL.keys())
def test_real_images_are_accepted_as_the_format_they_are(pillow_format: str, content: bytes) -> None:
    kind = inspect_image(content)
    assert (kind.name, kind.mime_type) == (NAMES[pillow_format], MIME_TYPES[pillow_format])


@pytest.mark.parametrize("side", [1, MAX_SIDE])
def test_an_image_at_the_side_limit_is_accepted(side: int) -> None:
    assert inspect_image(encoded("PNG", size=(side, 1), mode="1")).name == "PNG"
    assert inspect_image(encoded("PNG", size=(1, side), mode="1")).name == "PNG"


def test_one_pixel_past_the_side_limit_is_refused() -> None:
    too_wide = encoded("PNG", size=(MAX_SIDE + 1, 1), mode="1")
    limit = f"the limit is 1 to {MAX_SIDE} per side and {MAX_PIXELS} in total"
    assert refusal(too_wide) == f"image is {MAX_SIDE + 1}x1 pixels; {limit}"


KEPT = {"first-40-bytes": lambda size: 40, "half": lambda size: size // 2, "all-but-20-bytes": lambda size: size - 20}


@pytest.mark.parametrize("pillow_format", BODIES)
@pytest.mark.parametrize("kept", KEPT.values(), ids=KEPT.keys())
def test_truncated_images_are_refused(pillow_format: str, kept: Any) -> None:
    content = BODIES[pillow_format]
    assert refusal(content[: kept(len(content))]).startswith(f"file is not a valid {NAMES[pillow_format]} image: ")


def test_a_jpeg_missing_only_its_end_marker_is_refused() -> None:
    assert refusal(BODIES["JPEG"][:-2]).startswith("file is not a valid JPEG image: image file is truncated")


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (PNG_MAGIC + b"<html><script>alert(1)</script></html>", "PNG"),
        (JPEG_MAGIC, "JPEG"),
        (JPEG_MAGIC + b"<?php system($_GET['c']); ?>", "JPEG"),
        (b"RIFF\x20\0\0\0WEBPVP8 " + b"<svg onload=alert(1)>", "WebP"),
        (PNG_MAGIC + bytes(range(256)) * 4, "PNG"),
    ],
    ids=["png-html", "three-byte-jpeg", "jpeg-php", "webp-svg", "png-noise"],
)
def test_magic_followed_by_garbage_is_refused(content: bytes, named: str) -> None:
    assert refusal(content).startswith(f"file is not a valid {named} image: ")


@pytest.mark.parametrize(
    ("magic_of", "body_of"), [(magic, body) for magic in BODIES for body in BODIES if magic != body]
)
def test_magic_of_one_format_on_another_formats_body_is_refused(magic_of: str, body_of: str) -> None:
    content = MAGICS[magic_of] + BODIES[body_of]
    assert refusal(content).startswith(f"file is not a valid {NAMES[magic_of]} image: ")


@pytest.mark.parametrize("content", [b"GIF89a" + b"\0" * 20, b"<html>", b"BM" + b"\0" * 60, b"\x89PNG"])
def test_other_formats_are_refused_by_their_first_bytes(content: bytes) -> None:
    assert refusal(content) == "file must be a PNG, JPEG or WebP image"


def test_empty_and_oversized_files_are_refused() -> None:
    assert refusal(b"") == "file is empty"
    with pytest.raises(PayloadTooLarge):
        inspect_image(PNG_MAGIC + b"\0" * MAX_UPLOAD_BYTES)


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes of the pixel buffers and WebP canvases Pillow allocates in this thread from now on."""
    sizes: list[tuple[int, int]] = []
    this_thread = threading.get_ident()
    new_buffer, new_webp_decoder = Image.core.new, WebPImagePlugin._webp.WebPAnimDecoder

    def buffer(mode: str, size: tuple[int, int], *args: Any) -> Any:
        if threading.get_ident() == this_thread:
            sizes.append(size)
        return new_buffer(mode, size, *args)

    def webp_decoder(data: bytes) -> Any:
        decoder = new_webp_decoder(data)
        if threading.get_ident() == this_thread:
            sizes.append(decoder.get_info()[0])
        return decoder

    monkeypatch.setattr(Image.core, "new", buffer)
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPAnimDecoder", webp_decoder)
    return sizes


@pytest.mark.parametrize(
    ("content", "size"),
    [
        (png_claiming(100_000, 100_000), (100_000, 100_000)),
        (png_claiming(8_000, 6_251), (8_000, 6_251)),  # each side fine, 50,008,000 pixels in all
        (png_claiming(20_000, 1), (20_000, 1)),
        (vp8x_claiming(20_000, 20_000), (20_000, 20_000)),
        (vp8l_claiming(16_384, 16_384), (16_384, 16_384)),
    ],
    ids=["png-100000-square", "png-over-total", "png-over-side", "webp-extended", "webp-lossless"],
)
def test_a_header_claiming_huge_dimensions_is_refused_before_any_pixel_is_allocated(
    allocations: list[tuple[int, int]], content: bytes, size: tuple[int, int]
) -> None:
    assert len(content) < 200
    assert refusal(content).startswith(f"image is {size[0]}x{size[1]} pixels; the limit is ")
    assert allocations == []


def test_the_allocation_probe_sees_a_real_decode(allocations: list[tuple[int, int]]) -> None:
    inspect_image(BODIES["PNG"])
    inspect_image(BODIES["WEBP"])
    assert (6, 4) in allocations and len(allocations) >= 2


def test_a_webp_header_without_a_size_is_refused() -> None:
    assert refusal(webp_claiming(b"VP8 ", b"\0" * 20)) == "file is not a valid WebP image: no image size in its header"


def test_a_zero_sized_webp_is_refused() -> None:
    lossy = bytearray(BODIES["WEBP"])
    lossy[26:28] = b"\0\0"  # width 0 in the VP8 frame header
    assert refusal(bytes(lossy)).startswith("image is 0x4 pixels")


PNG_BASE64 = base64.b64encode(BODIES["PNG"]).decode()


@pytest.mark.parametrize(
    "data",
    [
        PNG_BASE64,
        "data:image/png;base64," + PNG_BASE64,
        "DATA:image/png;BASE64," + PNG_BASE64,
        "data:;base64," + PNG_BASE64,
        "data:application/octet-stream;base64," + PNG_BASE64,  # the bytes decide, not the declared type
        base64.encodebytes(BODIES["PNG"]).decode(),  # MIME: a line break every 76 characters
        "data:image/png;base64," + base64.encodebytes(BODIES["PNG"]).decode().replace("\n", "\r\n"),
    ],
    ids=["raw", "data-url", "upper-case", "no-media-type", "other-media-type", "mime-lines", "crlf-lines"],
)
def test_base64_forms_that_decode_to_the_image(data: str) -> None:
    assert decode_base64(data) == BODIES["PNG"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("data:image/png;base64", "data: URL has no comma before its payload"),
        ("data:", "data: URL has no comma before its payload"),
        ("data:image/png," + PNG_BASE64, "data: URL must be base64-encoded (data:image/png;base64,...)"),
        ("data:image/png;charset=utf-8," + PNG_BASE64, "data: URL must be base64-encoded"),
        ("data:image/png;base64;x=1," + PNG_BASE64, "data: URL must be base64-encoded"),
        ("data:image/png;base64,", "data is empty"),
        ("\n\r\n", "data is empty"),
        (PNG_BASE64[:40] + " " + PNG_BASE64[40:], "data is not valid base64"),
        (PNG_BASE64[:40] + "\t" + PNG_BASE64[40:], "data is not valid base64"),
        (PNG_BASE64[:40] + "\u2028" + PNG_BASE64[40:], "data is not valid base64"),  # a Unicode line break
        ("data:image/png;base64,iVBORw0KGgo=é", "data is not valid base64"),
        ("iVBORw0KGgo", "data is not valid base64"),  # padding missing
        ("-_-_", "data is not valid base64"),  # the URL-safe alphabet
        ("data:image/png;base64,%2F%2F%2F%2F", "data is not valid base64"),
        ("", "data must be a base64 string or a data: URL"),
        (None, "data must be a base64 string or a data: URL"),
        (12345, "data must be a base64 string or a data: URL"),
        (True, "data must be a base64 string or a data: URL"),
        ([PNG_BASE64], "data must be a base64 string or a data: URL"),
        ({"base64": PNG_BASE64}, "data must be a base64 string or a data: URL"),
    ],
)
def test_malformed_base64_forms_are_refused(data: Any, error: str) -> None:
    with pytest.raises(BadRequest) as refused:
        decode_base64(data)
    assert refused.value.message.startswith(error)


def test_a_string_too_long_to_hold_an_allowed_image_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_base64("data:image/png;base64," + "A" * (MAX_UPLOAD_BYTES * 4 // 3 + 8))


# Property tests: whatever arrives, the outcome is an accepted image or one of the two refusals.

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def accepted_or_refused(content: bytes) -> None:
    try:
        kind = inspect_image(content)
    except (BadRequest, PayloadTooLarge) as refused:
        assert refused.message
        return
    assert kind in KINDS
    with Image.open(io.BytesIO(content)) as image:  # what was accepted really is that kind of image
        assert image.get_format_mimetype() == kind.mime_type


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A real image with some bytes overwritten, inserted or cut off."""
    content = bytearray(draw(st.sampled_from([content for _, content in REAL.values()])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(content)))
        edit = draw(st.sampled_from(["overwrite", "insert", "cut"]))
        patch = draw(st.binary(min_size=1, max_size=8))
        if edit == "cut":
            del content[at:]
        elif edit == "insert":
            content[at:at] = patch
        else:
            content[at : at + len(patch)] = patch
    return bytes(content)


magic_then_anything = st.builds(
    lambda magic, rest: magic + rest, st.sampled_from([b"", *MAGICS.values(), b"RIFF\0\0\0\0WEBPVP8X"]), st.binary()
)


@FUZZ
@given(st.one_of(st.binary(), magic_then_anything, damaged_images()))
def test_any_bytes_are_an_accepted_image_or_a_refusal(content: bytes) -> None:
    accepted_or_refused(content)


def data_strings() -> st.SearchStrategy[str]:
    image_base64 = st.one_of(st.binary(), magic_then_anything, damaged_images()).map(
        lambda content: base64.b64encode(content).decode()
    )
    header = st.sampled_from(["", "data:", "data:image/png;base64,", "data:image/png,", "data:;base64", "DATA:,"])
    return st.one_of(st.text(), st.builds(str.__add__, header, st.one_of(image_base64, st.text())))


@FUZZ
@given(st.one_of(data_strings(), st.none(), st.integers(), st.floats(), st.lists(st.text(), max_size=3)))
def test_any_data_value_is_an_accepted_image_or_a_refusal(data: Any) -> None:
    try:
        content = decode_base64(data)
    except (BadRequest, PayloadTooLarge) as refused:
        assert refused.message
        return
    assert isinstance(data, str)
    accepted_or_refused(content)
