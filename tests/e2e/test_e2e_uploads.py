"""End to end, a gateway and the Kie emulator on loopback: only real images reach Kie's upload API, and every
malformed upload (multipart or JSON) is a 4xx JSON error with nothing sent upstream."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.support.gateways import Emulator
from tests.unit.test_upload_images import BODIES, png_claiming

PNG, JPEG, WEBP = BODIES["PNG"], BODIES["JPEG"], BODIES["WEBP"]
FAKE_PNG = b"\x89PNG\r\n\x1a\n<html><script>alert(document.cookie)</script></html>"
THREE_BYTE_JPEG = b"\xff\xd8\xff"


def part(content: bytes | str, filename: str | None = "upload.bin", content_type: str = "image/png") -> Any:
    return ("file", (filename, content, content_type))


REFUSED = {
    "fake-png": ({"files": [part(FAKE_PNG)]}, "file is not a valid PNG image: "),
    "three-byte-jpeg": ({"files": [part(THREE_BYTE_JPEG, content_type="image/jpeg")]}, "file is not a valid JPEG"),
    "fake-png-as-data-url": (
        {"json": {"data": "data:image/png;base64," + base64.b64encode(FAKE_PNG).decode()}},
        "file is not a valid PNG image: ",
    ),
    "huge-png-header": ({"files": [part(png_claiming(100_000, 100_000))]}, "image is 100000x100000 pixels; "),
    "data-url-without-comma": ({"json": {"data": "data:image/png;base64"}}, "data: URL has no comma"),
    "data-url-not-base64": ({"json": {"data": "data:image/png,abcd"}}, "data: URL must be base64-encoded"),
    "data-url-empty": ({"json": {"data": "data:image/png;base64,"}}, "data is empty"),
    "data-non-ascii": ({"json": {"data": "iVBORw0KGgo=\u00e9"}}, "data is not valid base64"),
    "data-number": ({"json": {"data": 42}}, "data must be a base64 string or a data: URL"),
    "file-as-text-field": ({"files": [part(PNG, filename=None)]}, "multipart field 'file' must be a file"),
    "two-files": ({"files": [part(PNG), part(JPEG)]}, "Malformed multipart body: Too many files"),
    "file-twice": (
        {"files": [part(PNG), part("not a file", filename=None)]},
        "multipart field 'file' must appear once",
    ),
    "raw-image-body": ({"content": PNG, "headers": {"Content-Type": "image/png"}}, "Send multipart/form-data"),
    "multipart-without-boundary": (
        {"content": b"--x\r\n\r\n--x--\r\n", "headers": {"Content-Type": "multipart/form-data"}},
        "Malformed multipart body: Missing boundary",
    ),
    "json-nested-deep": ({"content": b'{"data":' + b"[" * 100_000}, "Request body is not acceptable: JSON is nested"),
}


@pytest.mark.parametrize(("request_kwargs", "error"), REFUSED.values(), ids=REFUSED.keys())
async def test_malformed_uploads_are_400_and_never_reach_kie(
    client: httpx.AsyncClient, kie: Emulator, request_kwargs: dict[str, Any], error: str
) -> None:
    response = await client.post("/api/uploads", **request_kwargs)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(error)
    assert (await kie.calls())["upload"] == 0


IMAGES = {
    "png": (PNG, "image/png", ".png"),
    "jpeg": (JPEG, "image/jpeg", ".jpg"),
    "webp": (WEBP, "image/webp", ".webp"),
}


@pytest.mark.parametrize(("content", "mime_type", "extension"), IMAGES.values(), ids=IMAGES.keys())
async def test_real_images_are_relayed_byte_for_byte(
    client: httpx.AsyncClient, kie: Emulator, content: bytes, mime_type: str, extension: str
) -> None:
    # The part's declared type is not what decides: the decoded bytes are.
    response = await client.post("/api/uploads", files=[part(content, content_type="application/octet-stream")])
    assert response.status_code == 200, response.text
    uploaded = response.json()
    assert (uploaded["mimeType"], uploaded["size"]) == (mime_type, len(content))
    assert uploaded["fileName"].endswith(extension)
    assert (await kie.calls())["upload"] == 1
    async with httpx.AsyncClient() as http:
        served = await http.get(uploaded["url"])
    assert served.content == content and served.headers["content-type"] == mime_type


async def test_mime_wrapped_base64_is_accepted(client: httpx.AsyncClient, kie: Emulator) -> None:
    wrapped = base64.encodebytes(PNG).decode().replace("\n", "\r\n")  # what `base64` and mail tools print
    response = await client.post("/api/uploads", json={"data": "data:image/png;base64," + wrapped})
    assert response.status_code == 200, response.text
    assert response.json()["mimeType"] == "image/png"
    assert (await kie.calls())["upload"] == 1
