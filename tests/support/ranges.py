"""What every stored copy's URL answers to Range requests, wherever the copy is kept (RFC 9110 14.2)."""

from __future__ import annotations

import httpx

# Not one satisfiable range this service serves: ignored, so the whole copy comes back.
IGNORED_RANGES = ["", "bytes", "bytes=a-b", "items=0-1", "bytes=5-1", "bytes=0-1,5-6"]


async def check_ranges(http: httpx.AsyncClient, url: str, content: bytes) -> None:
    ranged = await http.get(url, headers={"Range": "bytes=10-99"})
    assert ranged.status_code == 206 and ranged.content == content[10:100]
    assert ranged.headers["content-range"] == f"bytes 10-99/{len(content)}"
    tail = await http.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == content[-5:]
    past_the_end = await http.get(url, headers={"Range": f"bytes={len(content)}-"})
    assert past_the_end.status_code == 416
    assert past_the_end.headers["content-range"] == f"bytes */{len(content)}"
    stale = await http.get(url, headers={"Range": "bytes=0-1", "If-Range": '"another version"'})
    assert stale.status_code == 200 and stale.content == content
    for header in IGNORED_RANGES:
        whole = await http.get(url, headers={"Range": header})
        assert (whole.status_code, whole.content) == (200, content), header
