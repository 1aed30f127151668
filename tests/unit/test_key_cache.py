"""The key cache: a key's expiry bounds its entry as the TTL does, and what was used is noted once."""

from __future__ import annotations

import time

from app.reads.key_cache import KeyCache


def test_an_entry_past_its_keys_expiry_counts_for_nothing_even_in_an_outage() -> None:
    keys = KeyCache(ttl_s=10)
    keys.put("expiring", 7, expires_in_s=0.05)
    keys.put("lasting", 8)
    assert keys.get("expiring") == 7 and keys.last_known("expiring") == 7
    time.sleep(0.06)
    assert keys.get("expiring") is None
    assert keys.last_known("expiring") is None  # the database being out does not revive it
    assert keys.get("lasting") == 8


def test_used_owners_are_noted_once_and_handed_over_once() -> None:
    keys = KeyCache(ttl_s=10)
    keys.take_used()
    keys.put("a", 1)
    keys.put("b", 2)
    keys.take_used()
    for _ in range(100):
        keys.get("a")
    keys.get("unknown")
    assert keys.take_used() == {1}
    assert keys.take_used() == set()
