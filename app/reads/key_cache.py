"""Which client a presented API key belongs to, remembered briefly so a read costs no key lookup."""

from __future__ import annotations

import time
from collections import OrderedDict

# A key revoked in the database stops working within this long on every replica (unless the
# database is unavailable: then a key this process found valid before keeps working).
KEY_CACHE_TTL_S = 10.0
MAX_KEYS = 10000


class KeyCache:
    """key hash -> owner id, for keys found valid. Unknown keys are never remembered, so a key
    works the moment it is created, and guessing costs a database lookup each time. An entry
    past its TTL is kept for last_known until the database says the key is gone."""

    def __init__(self, ttl_s: float = KEY_CACHE_TTL_S, max_keys: int = MAX_KEYS) -> None:
        self.ttl_s, self.max_keys = ttl_s, max_keys
        self._owners: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def get(self, key_hash: str) -> int | None:
        """The owner, if found valid within the TTL."""
        found = self._owners.get(key_hash)
        if found is None or time.monotonic() >= found[1]:
            return None
        return found[0]

    def last_known(self, key_hash: str) -> int | None:
        """The owner this process last found for the key, however long ago."""
        found = self._owners.get(key_hash)
        return None if found is None else found[0]

    def put(self, key_hash: str, owner: int | None) -> None:
        """What the database said: the key's owner, or None for no (longer a) valid key."""
        if owner is None:
            self._owners.pop(key_hash, None)
            return
        self._owners[key_hash] = (owner, time.monotonic() + self.ttl_s)
        self._owners.move_to_end(key_hash)
        if len(self._owners) > self.max_keys:
            self._owners.popitem(last=False)
