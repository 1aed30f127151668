"""What a provider says, cut to what a task row can hold.

Every update passes through here before it is applied, whichever way it came (callback,
sweeper query, provider), so that no provider answer, however odd, can fail the transaction
that records it (and with it every other callback committed in the same group).
"""

from __future__ import annotations

from dataclasses import replace

from app.inbound.untrusted import UNSTORABLE, clean_text, finite_number, is_upstream_id
from app.providers.params import is_absolute_http_url
from app.tasks.domain import Update

MAX_IMAGES = 100
MAX_URL = 4096
MAX_FAIL_CODE = 20  # the column's length
MAX_FAIL_MSG = 2000
MAX_INT32 = 2**31 - 1
MAX_CREDITS = 1e9


def storable_update(change: Update) -> Update:
    """What a provider said, cut to what a task row can hold: text cleaned and bounded, numbers
    finite and in range, image URLs only absolute http(s) ones. Applied to every update."""
    credits = finite_number(change.credits)
    cost = change.cost_time_ms
    return replace(
        change,
        image_urls=tuple(url for url in change.image_urls if _is_result_url(url))[:MAX_IMAGES],
        fail_code=None if change.fail_code is None else clean_text(change.fail_code, MAX_FAIL_CODE),
        fail_msg=None if change.fail_msg is None else clean_text(change.fail_msg, MAX_FAIL_MSG),
        cost_time_ms=cost if cost is not None and 0 <= cost <= MAX_INT32 else None,
        credits=credits if credits is not None and 0 <= credits <= MAX_CREDITS else None,
        upstream_id=change.upstream_id if is_upstream_id(change.upstream_id) else None,
    )


def _is_result_url(url: str) -> bool:
    return len(url) <= MAX_URL and not UNSTORABLE.search(url) and is_absolute_http_url(url)
