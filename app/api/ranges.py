"""Which bytes of a stored copy a GET asks for (`Range`, RFC 9110 14.2), for copies in a bucket and
local files alike (which Starlette's FileResponse then sends).

One range is served as asked. A header this does not understand, several ranges at once, or an
If-Range that names another version is ignored, as the RFC lets a server do: the whole copy is
sent instead. A range that starts past the end cannot be served at all (416).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SINGLE_RANGE = re.compile(r"bytes=(?:(\d{1,18})-(\d{0,18})|-(\d{1,18}))")


@dataclass(frozen=True)
class Whole:
    pass


@dataclass(frozen=True)
class Part:
    start: int
    end: int  # exclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


@dataclass(frozen=True)
class Unsatisfiable:
    pass


def requested(range_header: str | None, if_range: str | None, etag: str, size: int) -> Whole | Part | Unsatisfiable:
    if range_header is None or (if_range is not None and if_range.strip() != etag):
        return Whole()
    found = SINGLE_RANGE.fullmatch(range_header.strip().replace(" ", ""))
    if found is None:
        return Whole()
    first, last, suffix = found.groups()
    if suffix is not None:
        length = int(suffix)
        return Part(max(0, size - length), size) if length > 0 and size > 0 else Unsatisfiable()
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return Whole()  # a-b with b < a is not a valid range: ignored
    return Part(start, end) if start < size else Unsatisfiable()
