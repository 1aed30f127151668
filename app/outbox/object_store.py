"""Result copies in an S3-compatible bucket (`STORAGE_URL=s3://bucket/prefix`), through obstore.

obstore (Rust's object_store) signs requests itself, streams an upload from an async iterator as
a multipart upload (aborted if the iterator raises, so a refused or cut-off download leaves no
object), streams ranges back, presigns URLs, and retries a failing request a few times. Where
it connects and with which credentials comes from the usual environment variables, as for any
AWS client: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN... The endpoint is the operator's, so it is not held to the outbound
private-network rule that provider-given URLs are.

A completed upload is all there is: an object appears whole or not at all, so there is nothing
like a local temp file to clean up. A crash mid-upload leaves only an unfinished multipart upload,
invisible to readers; a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes those.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from app.outbox.storage import DEFAULT_TYPE, Measured, StoredObject, StoreUnavailable, check_key

# Parts of a multipart upload, two in flight: an upload holds about 10 MB however large the image.
PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2
READ_CHUNK_BYTES = 64 * 1024
# obstore's own retries ride out a blip; a longer outage is the copier's to retry, with its backoff.
RETRIES = {"max_retries": 3, "retry_timeout": timedelta(seconds=10)}
SIGNED_URL_TTL = timedelta(minutes=5)


def open_bucket(url: str) -> S3Storage:
    return _bucket(url, os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or "")


@functools.cache
def _bucket(url: str, endpoint: str) -> S3Storage:
    """One client per bucket and endpoint in a process: it keeps its connections and credentials."""
    return S3Storage(url, endpoint)


class S3Storage:
    def __init__(self, url: str, endpoint: str) -> None:
        # Plain HTTP only where the operator named an http:// endpoint (MinIO beside the service).
        client = {"allow_http": True} if endpoint.startswith("http://") else {}
        self.store = S3Store.from_url(url, client_options=client, retry_config=RETRIES)  # type: ignore[arg-type]

    def path(self, key: str) -> Path | None:
        return None

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int, content_type: str = DEFAULT_TYPE
    ) -> StoredObject:
        check_key(key)
        body = Measured(chunks, max_bytes)
        try:
            await obstore.put_async(
                self.store,
                key,
                aiter(body),
                attributes={"Content-Type": content_type},
                use_multipart=True,
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except (BaseError, OSError) as exc:
            if body.failure is not None:  # the body's own failure, not the store's
                raise body.failure from None
            raise unavailable(exc) from None
        return body.stored()

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes] | None:
        """Bytes [start, end) of the object as they arrive; None if there is no such object."""
        check_key(key)
        try:
            result = await obstore.get_async(self.store, key, options={"range": (start, end)})
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as exc:
            raise unavailable(exc) from None
        return _chunks(result.stream(min_chunk_size=READ_CHUNK_BYTES))

    async def signed_url(self, key: str) -> str:
        """A URL that GETs the object without credentials for the next SIGNED_URL_TTL."""
        check_key(key)
        return await obstore.sign_async(self.store, "GET", key, SIGNED_URL_TTL)

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            return
        except (BaseError, OSError) as exc:
            raise unavailable(exc) from None


def unavailable(exc: Exception) -> StoreUnavailable:
    """The store's error in one line: obstore's messages go on with debug detail below the first."""
    return StoreUnavailable(f"storage: {exc}".splitlines()[0][:300])


async def _chunks(stream: AsyncIterator[object]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield bytes(chunk)  # type: ignore[call-overload]
