"""Result files, /files/{taskId}/{n}.{ext}: image n of a successful job of any family, as shaped by the job's
result-file faults (content type, size, slow delivery).

The body is streamed from a small head (the rendered image, or an HTML page) followed by zero padding made on the
fly, so result_size_bytes can describe a 60 MB file without it ever sitting in memory.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from app.emulator import images
from app.emulator.jobs import Job
from app.emulator.store import store_of

CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)
# A slow body (result_delay_s) arrives in this many pieces spread over the delay, so a client can be stopped
# part-way through, as when a download is killed mid-transfer.
SLOW_PIECES = 10
# What a file host typically answers instead of the file (an error or login page) when the content type is wrong.
HTML_PAGE = b"<!doctype html>\n<html><head><title>Not available</title></head><body>Not available</body></html>\n"


def image_size(job: Job) -> int:
    """Bytes of each of the job's images as served: result_size_bytes when set, else the rendered image's size."""
    size = job.faults.result_size_bytes
    return len(images.render(job.ratio, job.extension)) if size is None else size


def _content(job: Job) -> tuple[str, bytes, int]:
    """(media type, head, total size) of one of the job's result files."""
    media_type = job.faults.result_content_type or images.MEDIA_TYPES[job.extension]
    if not media_type.lower().startswith("image/"):
        return media_type, HTML_PAGE, len(HTML_PAGE)
    # An image longer than the head is padded (decoders ignore bytes after the end marker); a shorter one is cut.
    return media_type, images.render(job.ratio, job.extension), image_size(job)


def _span(head: bytes, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end of head-then-zeros, made one chunk (at most CHUNK) at a time."""
    while start < end:
        stop = min(end, start + CHUNK)
        chunk = head[start:stop] if start < len(head) else _ZEROS[: stop - start]
        yield chunk
        start += len(chunk)


async def _body(head: bytes, size: int, delay_s: float) -> AsyncIterator[bytes]:
    pieces = SLOW_PIECES if delay_s > 0 else 1
    for piece in range(pieces):
        if piece:  # the first piece goes at once, so the client sees the download start
            await asyncio.sleep(delay_s / (pieces - 1))
        for chunk in _span(head, size * piece // pieces, size * (piece + 1) // pieces):
            yield chunk


async def result_file(request: Request) -> Response:
    store = store_of(request)
    if request.method == "GET":  # Starlette also routes HEAD here, which downloads nothing
        store.calls["fileDownloads"] += 1
        store.calls["fileDownloadsByPath"][request.url.path] += 1
    job = store.jobs.get(request.path_params["task_id"])
    served = job is not None and job.phase(store.clock())[0] == "success"
    if not served or request.path_params["name"] not in {url.rsplit("/", 1)[1] for url in job.result_urls}:
        return PlainTextResponse("not found", status_code=404)
    media_type, head, size = _content(job)
    # The header, not media_type=, so the type goes out verbatim (Starlette would append a charset to text/*).
    headers = {"content-type": media_type, "content-length": str(size)}
    return StreamingResponse(_body(head, size, job.faults.result_delay_s), headers=headers)
