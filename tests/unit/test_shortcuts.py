"""The status shortcut answers only what the route would answer the same way, from the caches;
everything else goes on, untouched, to the middleware stack and the router."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from app.api.shortcuts import answered_from_cache
from app.keys import hash_key
from app.reads.key_cache import KeyCache
from app.reads.status_cache import CachedStatus, StatusCache

KEY, OTHER_KEY = "ih_key-of-the-owner", "ih_key-of-someone-else"
TASK = "ih_Qm3xv8ZkR2pT7yLw0aBcDe"
BODY = b'{"taskId":"ih_Qm3xv8ZkR2pT7yLw0aBcDe","state":"success"}'


def caches() -> SimpleNamespace:
    keys, statuses = KeyCache(), StatusCache(100)
    keys.put(hash_key(KEY), 1)
    keys.put(hash_key(OTHER_KEY), 2)
    statuses.enable(True)
    statuses.put(TASK, CachedStatus(owner=1, terminal=True, body=BODY), statuses.epoch)
    return SimpleNamespace(keys=keys, status_cache=statuses, settings=SimpleNamespace(access_log=False))


def scope(query: bytes, headers: list[tuple[bytes, bytes]], method: str = "GET", path: str = "/api/images/status"):
    state = {"deps": caches()}
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers, "state": state}


def through(request_scope: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """("shortcut", what it sent) or ("router", [])."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    answered = asyncio.run(answered_from_cache(request_scope, send))  # type: ignore[arg-type]
    return ("shortcut", sent) if answered else ("router", sent)


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"gateway"), (b"authorization", f"Bearer {key}".encode())]


def test_a_cached_status_is_answered_with_the_routes_bytes_and_headers() -> None:
    way, sent = through(scope(f"taskId={TASK}".encode(), bearer(KEY)))
    assert way == "shortcut"
    start = sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert start["headers"][:2] == [
        (b"content-length", str(len(BODY)).encode()),
        (b"content-type", b"application/json"),
    ]
    (name, made_id), *_ = start["headers"][2:]
    assert name == b"x-request-id" and len(made_id) == 16
    assert sent[1] == {"type": "http.response.body", "body": BODY}


def test_the_callers_request_id_is_sent_back() -> None:
    _, sent = through(scope(f"taskId={TASK}".encode(), [*bearer(KEY), (b"x-request-id", b"lb-4f2a.17")]))
    assert sent[0]["headers"][2] == (b"x-request-id", b"lb-4f2a.17")


@pytest.mark.parametrize(
    ("query", "headers", "method", "path"),
    [
        (f"taskId={TASK}".encode(), bearer(OTHER_KEY), "GET", "/api/images/status"),  # not the owner: the router's 404
        (f"taskId={TASK}".encode(), bearer("ih_unknown"), "GET", "/api/images/status"),  # key not cached
        (f"taskId={TASK}".encode(), [(b"cookie", f"auth_token={KEY}".encode())], "GET", "/api/images/status"),
        (f"taskId={TASK}".encode(), [(b"authorization", f"Basic {KEY}".encode())], "GET", "/api/images/status"),
        (b"taskId=ih_not_cached", bearer(KEY), "GET", "/api/images/status"),
        (f"taskId={TASK}&wait=5".encode(), bearer(KEY), "GET", "/api/images/status"),
        (f"wait=0&taskId={TASK}".encode(), bearer(KEY), "GET", "/api/images/status"),
        (f"taskId={TASK}%20".encode(), bearer(KEY), "GET", "/api/images/status"),
        (f"taskId={TASK}".encode(), bearer(KEY), "HEAD", "/api/images/status"),
        (f"taskId={TASK}".encode(), bearer(KEY), "GET", "/api/images/status/"),
        (f"taskId={TASK}".encode(), bearer(KEY), "GET", "/api/tasks"),
        (f"taskId={TASK}".encode(), [*bearer(KEY), (b"user-agent", b"a\x00b")], "GET", "/api/images/status"),
    ],
)
def test_anything_else_goes_on_to_the_router(query: bytes, headers: list, method: str, path: str) -> None:
    assert through(scope(query, headers, method, path)) == ("router", [])


NOISE = st.binary(max_size=12) | st.text(alphabet="taskId=&%+_-ih0aZ ;", max_size=12).map(str.encode)
AROUND_THE_TASK = st.tuples(NOISE, NOISE).map(lambda ends: ends[0] + f"taskId={TASK}".encode() + ends[1])


@given(NOISE | AROUND_THE_TASK)
def test_the_shortcut_reads_a_query_only_as_the_router_would(query: bytes) -> None:
    """Whatever the query, the shortcut answers only when it holds one taskId, the cached task's."""
    way, _ = through(scope(query, bearer(KEY)))
    if way == "shortcut":
        params = QueryParams(query)
        assert list(params.keys()) == ["taskId"] and params["taskId"].strip() == TASK
