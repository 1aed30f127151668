"""End to end: result copies in an S3 bucket every replica shares (STORAGE_URL=s3://...), against a
real S3-protocol server on loopback. A copy one replica made is served by another, Range and
caching headers alike, or as a redirect to a presigned URL; purge removes the object; a store
that is down for a while is waited out by the copier's retries."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import httpx

from app.deps import open_deps
from app.tasks.retention import purge
from tests.e2e.test_e2e_copies import IMMUTABLE, copies_of, own_url, status_once_copied, upstream_bytes
from tests.e2e.test_e2e_flow import submit
from tests.support.gateways import ClientOf, Emulator, StartGateway, gateway_settings
from tests.support.ranges import check_ranges
from tests.support.s3 import S3Server
from tests.support.waiting import wait_until


async def test_a_copy_one_replica_made_is_served_by_another_and_purged_from_the_bucket(
    start_gateway: StartGateway,
    client_of: ClientOf,
    kie: Emulator,
    sessions: Any,
    database_url: str,
    s3_server: S3Server,
    bucket: str,
) -> None:
    storage_url = f"s3://{bucket}/copies"
    copier = await start_gateway(storage_url=storage_url)
    # The other replicas run no sweeper, so no copier: whatever they serve, the first one stored.
    server = await start_gateway(storage_url=storage_url, sweep_interval_s=0)
    redirecting = await start_gateway(storage_url=storage_url, sweep_interval_s=0, storage_redirect=True)
    await kie.set_faults(generate_s=0.2)
    async with client_of(copier) as client:
        task_id = await submit(client)
        await status_once_copied(client, copier.url, task_id)
        key = {"Authorization": client.headers["Authorization"]}
    (content,) = await upstream_bytes(sessions, task_id)
    assert s3_server.keys(bucket) == [f"copies/{task_id}/0"]

    async with httpx.AsyncClient(headers=key) as http:
        url = own_url(server.url, task_id, 0)
        whole = await http.get(url)
        assert whole.status_code == 200 and whole.content == content
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        assert (whole.headers["content-type"], whole.headers["etag"]) == ("image/png", etag)
        assert whole.headers["cache-control"] == IMMUTABLE and whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-length"] == str(len(content))

        await check_ranges(http, url, content)
        cached = await http.get(url, headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.headers["etag"] == etag

        redirect = await http.get(own_url(redirecting.url, task_id, 0))
        assert redirect.status_code == 302 and redirect.headers["cache-control"] == "no-store"
        assert redirect.headers["location"].startswith(f"{s3_server.url}/{bucket}/copies/{task_id}/0?")
    async with httpx.AsyncClient() as anyone:  # the presigned URL needs no key
        presigned = await anyone.get(redirect.headers["location"])
    assert presigned.status_code == 200 and presigned.content == content
    assert presigned.headers["content-type"] == "image/png"

    async with client_of(server) as other_client:
        assert (await other_client.get(own_url(server.url, task_id, 0))).status_code == 404

    settings = gateway_settings(database_url, "http://127.0.0.1:9", storage_url=storage_url)
    async with open_deps(settings) as deps:
        removed = await purge(deps, timedelta(0))
    assert removed["files"] == 1 and s3_server.keys(bucket) == []


async def test_a_store_that_is_down_for_a_while_is_waited_out(
    start_gateway: StartGateway,
    client_of: ClientOf,
    kie: Emulator,
    sessions: Any,
    s3_server: S3Server,
    bucket: str,
) -> None:
    gateway = await start_gateway(storage_url=f"s3://{bucket}/copies")
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as client:
        s3_server.stop()
        try:
            task_id = await submit(client)
            (row,) = await wait_until(
                lambda: copies_of(sessions, task_id), lambda rows: len(rows) == 1 and rows[0].attempts >= 1, timeout=30
            )
            assert row.state == "pending" and row.error is not None and "storage" in row.error
        finally:
            s3_server.start()
        s3_server.create_bucket(bucket)  # a store that lost everything comes back empty
        stored = await wait_until(
            lambda: copies_of(sessions, task_id), lambda rows: rows[0].state == "stored", timeout=30
        )
        assert stored[0].attempts >= 2 and s3_server.keys(bucket) == [f"copies/{task_id}/0"]
        (content,) = await upstream_bytes(sessions, task_id)
        served = await client.get(own_url(gateway.url, task_id, 0))
    assert served.status_code == 200 and served.content == content
