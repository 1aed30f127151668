"""The emulator's Kie file upload API: multipart and base64 uploads, and serving the stored bytes back."""

import base64
import re
from datetime import datetime

import httpx
import pytest

from app.emulator import images
from tests.emulator.test_emulator import AUTH, set_faults
from tests.support.emulated import KVID_KEY

STREAM = "/api/file-stream-upload"
BASE64 = "/api/file-base64-upload"
PNG = images.render((1.0, 1.0), "png")
DATA_KEYS = {"fileName", "filePath", "downloadUrl", "fileSize", "mimeType", "uploadedAt"}


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["code"], body["msg"]) == (True, 200, "File uploaded successfully"), body
    assert set(body["data"]) == DATA_KEYS
    return body["data"]


def refused(response: httpx.Response, code: int, named: str) -> None:
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "code", "msg"} and (body["success"], body["code"]) == (False, code)
    assert named in body["msg"]


async def stream(client: httpx.AsyncClient, content: bytes, filename: str, **fields) -> httpx.Response:
    files = {"file": (filename, content, "image/png" if filename.endswith(".png") else "application/octet-stream")}
    return await client.post(STREAM, files=files, data=fields, headers=AUTH)


async def test_stream_upload_is_served_back(emulator):
    store, client = emulator
    store.clock = lambda: 1_700_000_000.5
    data = ok(await stream(client, PNG, "local.png", uploadPath="images/user-1", fileName="cat.png"))
    assert data["fileName"] == "cat.png" and data["filePath"] == "images/user-1/cat.png"
    assert data["downloadUrl"] == "http://emulator.test/files/uploads/images/user-1/cat.png"
    assert (data["fileSize"], data["mimeType"]) == (len(PNG), "image/png")
    assert data["uploadedAt"] == "2023-11-14T22:13:20.500Z"
    served = await client.get(data["downloadUrl"])
    assert served.status_code == 200 and served.content == PNG and served.headers["content-type"] == "image/png"
    assert (await client.get("/emulator/calls")).json()["upload"] == 1


async def test_stream_upload_without_file_name_keeps_the_extension(emulator):
    _, client = emulator
    data = ok(await stream(client, b"\xff\xd8jpeg bytes", "photo.JPG", uploadPath="/in/"))
    assert re.fullmatch(r"[0-9a-f]{16}\.JPG", data["fileName"]) and data["filePath"] == f"in/{data['fileName']}"
    assert data["mimeType"] == "image/jpeg"  # guessed from the name, as the part said octet-stream
    assert (await client.get(data["downloadUrl"])).content == b"\xff\xd8jpeg bytes"


async def test_base64_upload_from_a_data_url(emulator):
    _, client = emulator
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    data = ok(await client.post(BASE64, json={"base64Data": data_url, "uploadPath": "refs"}, headers=AUTH))
    assert re.fullmatch(r"[0-9a-f]{16}\.png", data["fileName"])
    assert (data["fileSize"], data["mimeType"]) == (len(PNG), "image/png")
    datetime.fromisoformat(data["uploadedAt"])
    served = await client.get(data["downloadUrl"])
    assert served.content == PNG and served.headers["content-type"] == "image/png"


async def test_base64_upload_of_raw_base64_with_a_name(emulator):
    _, client = emulator
    body = {"base64Data": base64.b64encode(b"hello").decode(), "uploadPath": "a/b", "fileName": "note.txt"}
    data = ok(await client.post(BASE64, json=body, headers=AUTH))
    assert (data["filePath"], data["fileSize"]) == ("a/b/note.txt", 5)
    served = await client.get(data["downloadUrl"])
    assert served.content == b"hello" and served.headers["content-type"].startswith("text/plain")


async def test_names_needing_quoting_round_trip(emulator):
    _, client = emulator
    body = {"base64Data": "aGk=", "uploadPath": "my refs", "fileName": "a cat #1.txt"}
    data = ok(await client.post(BASE64, json=body, headers=AUTH))
    assert data["downloadUrl"] == "http://emulator.test/files/uploads/my%20refs/a%20cat%20%231.txt"
    assert (await client.get(data["downloadUrl"])).content == b"hi"


async def test_reusing_a_file_name_overwrites(emulator):
    _, client = emulator
    body = {"base64Data": base64.b64encode(b"one").decode(), "uploadPath": "x", "fileName": "f.bin"}
    ok(await client.post(BASE64, json=body, headers=AUTH))
    url = ok(await client.post(BASE64, json={**body, "base64Data": base64.b64encode(b"two").decode()}, headers=AUTH))
    assert (await client.get(url["downloadUrl"])).content == b"two"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"base64Data": "aGk="}, "uploadPath"),
        ({"base64Data": "aGk=", "uploadPath": "/"}, "uploadPath"),
        ({"base64Data": "aGk=", "uploadPath": "a/../b"}, "uploadPath"),
        ({"uploadPath": "x"}, "base64Data"),
        ({"base64Data": "not base64!", "uploadPath": "x"}, "base64"),
        ({"base64Data": "aGk=", "uploadPath": "x", "fileName": "a/b.txt"}, "fileName"),
        (["x"], "JSON object"),
    ],
)
async def test_invalid_base64_uploads_are_400s(emulator, body, named):
    store, client = emulator
    refused(await client.post(BASE64, json=body, headers=AUTH), 400, named)
    assert store.uploads == {}


async def test_invalid_stream_uploads_are_400s(emulator):
    _, client = emulator
    refused(await stream(client, PNG, "a.png"), 400, "uploadPath")
    no_file = await client.post(STREAM, data={"uploadPath": "x"}, files={"other": ("a", b"1")}, headers=AUTH)
    refused(no_file, 400, "file")
    not_multipart = await client.post(STREAM, json={"uploadPath": "x"}, headers=AUTH)
    refused(not_multipart, 400, "file")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"api-key": KVID_KEY}])
async def test_uploads_need_the_kie_key(emulator, headers):
    store, client = emulator
    denied = {"success": False, "code": 401, "msg": "You do not have access permissions"}
    assert (await client.post(BASE64, json={"base64Data": "aGk=", "uploadPath": "x"}, headers=headers)).json() == denied
    files = {"file": ("a.png", PNG)}
    assert (await client.post(STREAM, files=files, data={"uploadPath": "x"}, headers=headers)).json() == denied
    assert store.uploads == {} and (await client.get("/emulator/calls")).json()["upload"] == 2


async def test_create_faults_do_not_apply_to_uploads(emulator):
    _, client = emulator
    await set_faults(client, create_errors=[500], create_http_errors=[503])
    ok(await client.post(BASE64, json={"base64Data": "aGk=", "uploadPath": "x"}, headers=AUTH))
    faults = (await client.get("/emulator/faults")).json()
    assert (faults["create_errors"], faults["create_http_errors"]) == ([500], [503])


async def test_unknown_upload_is_404_and_reset_forgets_uploads(emulator):
    store, client = emulator
    assert (await client.get("/files/uploads/x/missing.png")).status_code == 404
    data = ok(await client.post(BASE64, json={"base64Data": "aGk=", "uploadPath": "x"}, headers=AUTH))
    await client.post("/emulator/reset")
    assert store.uploads == {} and (await client.get(data["downloadUrl"])).status_code == 404
