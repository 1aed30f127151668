"""Reading a Range header for copies streamed from a bucket (app/api/ranges.py): whatever the header,
an answer and never an exception, and a served part is always inside the copy and what was asked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.api.ranges import Part, Unsatisfiable, Whole, requested

ETAG = '"abc"'


@given(header=st.text(max_size=60), size=st.integers(min_value=0, max_value=10**6))
def test_any_header_gets_an_answer_within_the_copy(header: str, size: int) -> None:
    answer = requested(header, None, ETAG, size)
    if isinstance(answer, Part):
        assert 0 <= answer.start < answer.end <= size


@given(
    size=st.integers(min_value=1, max_value=10_000),
    first=st.integers(min_value=0, max_value=20_000),
    length=st.integers(min_value=0, max_value=20_000),
)
def test_a_single_range_is_the_slice_it_names(size: int, first: int, length: int) -> None:
    content = bytes(range(256)) * (size // 256 + 1)
    content = content[:size]
    last = first + length
    answer = requested(f"bytes={first}-{last}", None, ETAG, size)
    if first >= size:
        assert answer == Unsatisfiable()
    else:
        assert isinstance(answer, Part)
        assert content[answer.start : answer.end] == content[first : last + 1]
    suffix = requested(f"bytes=-{length}", None, ETAG, size)
    assert suffix == (Unsatisfiable() if length == 0 else Part(max(0, size - length), size))


def test_what_is_not_one_plain_range_of_this_version_is_the_whole_copy() -> None:
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=abc", "bytes=-"):
        assert requested(header, None, ETAG, 100) == Whole(), header
    assert requested("bytes=0-1", '"another"', ETAG, 100) == Whole()
    assert requested("bytes=0-1", ETAG, ETAG, 100) == Part(0, 2)
    assert requested(None, None, ETAG, 100) == Whole()
    assert Part(10, 100).content_range(100) == "bytes 10-99/100"
