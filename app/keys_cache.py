"""Which client a presented API key belongs to, remembered briefly so a read costs no key lookup."""

from __future__ import annotations

import time
from collections import OrderedDict

# A key revoked in the database stops working within this long on every replica.
KEY_CACHE_TTL_S = 10.0
MAX_KEYS = 10000


class KeyCache:
    """key hash -> owner id, for keys found valid. Unknown keys are never remembered, so a key
    works the moment it is created, and guessing costs a database lookup each time."""

    def __init__(self, ttl_s: float = KEY_CACHE_TTL_S, max_keys: int = MAX_KEYS) -> None:
        self.ttl_s, self.max_keys = ttl_s, max_keys
        self._owners: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def get(self, key_hash: str) -> int | None:
        found = self._owners.get(key_hash)
        if found is None:
            return None
        owner, expires = found
        if time.monotonic() >= expires:
            del self._owners[key_hash]
            return None
        return owner

    def put(self, key_hash: str, owner: int) -> None:
        self._owners[key_hash] = (owner, time.monotonic() + self.ttl_s)
        self._owners.move_to_end(key_hash)
        if len(self._owners) > self.max_keys:
            self._owners.popitem(last=False)
