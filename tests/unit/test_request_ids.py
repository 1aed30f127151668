"""Request ids (app/observe/logs.py): a sane client id is kept, anything else replaced by a fresh one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.observe.logs import SANE_REQUEST_ID, request_id


def test_made_ids_are_distinct_and_of_one_shape() -> None:
    made = [request_id(None) for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert all(len(rid) == 16 and int(rid, 16) >= 0 for rid in made)


@given(st.binary(max_size=100))
def test_a_given_id_is_kept_only_if_sane(given_id: bytes) -> None:
    kept = request_id(given_id)
    assert SANE_REQUEST_ID.fullmatch(kept)
    text = given_id.decode("latin-1")
    assert (kept == text) == bool(SANE_REQUEST_ID.fullmatch(text))
