"""A queued task's place is computed on every read of it: picked from the window's sends, and
spliced into the cached body as bytes. Both must say exactly what the plain definitions say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.reads.status_cache import CachedStatus
from app.tasks.status import encode_json, spliced
from app.tasks.throttle import Place, place_frees

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
PLACE_FIELDS = ("queuePosition", "estimatedStartAt", "taskId")
OFFSETS = st.floats(min_value=-30, max_value=0, allow_nan=False).map(lambda s: NOW + timedelta(seconds=s))


def by_definition(position: int, sends: list[datetime], limit: tuple[int, timedelta], now: datetime) -> datetime:
    """The free places now, then one as each send ages out, in order; each used place frees again a window later."""
    count, window = limit
    frees = [now] * (count - len(sends)) + sorted(max(now, at + window) for at in sends)
    laps, index = divmod(position - 1, count)
    return frees[index] + laps * window


@given(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=1, max_value=40),
    st.floats(min_value=0.5, max_value=60, allow_nan=False),
    st.lists(OFFSETS, max_size=40),
)
def test_a_place_frees_when_the_plain_definition_says(position: int, count: int, window_s: float, sends: list) -> None:
    limit = (count, timedelta(seconds=window_s))
    newest_first = sorted(sends, reverse=True)[:count]  # as read: the window's latest `count` sends
    assert place_frees(position, newest_first, limit, NOW) == by_definition(position, newest_first, limit, NOW)


@given(
    st.integers(min_value=1, max_value=10**9),
    st.datetimes(timezones=st.just(UTC)),
    st.dictionaries(
        st.text(max_size=8).filter(lambda key: key not in PLACE_FIELDS), st.text() | st.integers(), max_size=4
    ),
)
def test_a_place_is_spliced_as_encode_json_writes_it(position: int, starts_at: datetime, content: dict) -> None:
    cached = CachedStatus(owner=1, terminal=False, body=encode_json({"taskId": "ih_x", **content}))
    body = spliced(cached, Place(position, starts_at)).body
    expected = {"taskId": "ih_x", **content, "queuePosition": position, "estimatedStartAt": starts_at.isoformat()}
    assert body == encode_json(expected)
