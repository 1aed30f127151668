"""The header bound counts only the headers of a request, however its bytes are split into reads:
a body that arrives in the same read as the headers' end is no part of them."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from app.server import BoundedHttpProtocol

HEAD = b"POST /callbacks/kie/t/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60\r\n\r\n"


@given(body=st.binary(max_size=60), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_the_headers_bytes_are_counted_whatever_the_reads(body: bytes, cuts: list[int]) -> None:
    request = HEAD + body
    bounds = sorted({min(cut, len(request)) for cut in cuts} | {0, len(request)})
    reads = [request[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    protocol = SimpleNamespace(header_tail=b"")
    counted = 0
    for data in reads:
        counted += BoundedHttpProtocol._header_share(protocol, data)  # type: ignore[arg-type]
        if counted >= len(HEAD):  # the parser has the headers: counting stops there
            break
    assert counted == len(HEAD)
