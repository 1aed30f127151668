"""Which client a presented API key belongs to, remembered briefly so a read costs no key lookup."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

# A key revoked in the database stops working within this long on every replica (unless the
# database is unavailable: then a key this process found valid before keeps working, until it expires).
KEY_CACHE_TTL_S = 10.0
MAX_KEYS = 10000


class KeyCache:
    """key hash -> owner id, for keys found valid. Unknown keys are never remembered, so a key
    works the moment it is created, and guessing costs a database lookup each time. An entry
    past its TTL is kept for last_known until the database says the key is gone; an entry past
    its key's expiry counts for nothing.

    It also notes which owners' keys were used, for `last used` (app/keys.py record_key_use)."""

    def __init__(self, ttl_s: float = KEY_CACHE_TTL_S, max_keys: int = MAX_KEYS) -> None:
        self.ttl_s, self.max_keys = ttl_s, max_keys
        # key hash: (owner, fresh until, expires at), on the monotonic clock
        self._owners: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self.used: set[int] = set()

    def get(self, key_hash: str) -> int | None:
        """The owner, if found valid within the TTL."""
        found = self._owners.get(key_hash)
        if found is None:
            return None
        owner, fresh_until, expires_at = found
        if time.monotonic() >= min(fresh_until, expires_at):
            return None
        self.used.add(owner)
        return owner

    def last_known(self, key_hash: str) -> int | None:
        """The owner this process last found for the key, however long ago, unless it has expired."""
        found = self._owners.get(key_hash)
        if found is None or time.monotonic() >= found[2]:
            return None
        self.used.add(found[0])
        return found[0]

    def put(self, key_hash: str, owner: int | None, expires_in_s: float | None = None) -> None:
        """What the database said: the key's owner (and how long until the key expires), or None
        for no (longer a) valid key."""
        if owner is None:
            self._owners.pop(key_hash, None)
            return
        now = time.monotonic()
        expires_at = math.inf if expires_in_s is None else now + expires_in_s
        self._owners[key_hash] = (owner, now + self.ttl_s, expires_at)
        self._owners.move_to_end(key_hash)
        self.used.add(owner)
        if len(self._owners) > self.max_keys:
            self._owners.popitem(last=False)

    def take_used(self) -> set[int]:
        """The owners whose keys were used since the last call."""
        used, self.used = self.used, set()
        return used
