"""Status bodies of recently read tasks, already serialized, so a repeated read costs no query.

An entry is only ever served while something guarantees it is current:
- this process's own writes drop their tasks' entries as they commit (Deps.task_changed), so a
  read that starts after a callback was answered never sees the older state;
- on PostgreSQL, every replica's writes arrive as NOTIFYs (app/watch.py) and drop entries here;
  while that LISTEN connection is down the cache is off;
- on SQLite, a monitor sees any commit by any connection or process (PRAGMA data_version) and
  empties the cache within FRESHNESS_POLL_S; until it runs the cache is off.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedStatus:
    owner: int  # api key id: the entry is only ever served to the task's owner
    terminal: bool
    body: bytes  # the status object as JSON


class StatusCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedStatus] = OrderedDict()
        self._enabled = False
        # Bumped by every invalidation: a read that began before one must not store what it read.
        self.epoch = 0

    def get(self, task_id: str) -> CachedStatus | None:
        entry = self._entries.get(task_id)
        if entry is not None:
            self._entries.move_to_end(task_id)
        return entry

    def put(self, task_id: str, entry: CachedStatus, read_at_epoch: int) -> None:
        if not self._enabled or read_at_epoch != self.epoch or self.max_entries <= 0:
            return
        self._entries[task_id] = entry
        self._entries.move_to_end(task_id)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, task_id: str) -> None:
        self.epoch += 1
        self._entries.pop(task_id, None)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()

    def enable(self, enabled: bool) -> None:
        """Serve entries only while changes are being heard; either way, start empty."""
        self._enabled = enabled
        self.clear()

    def __len__(self) -> int:
        return len(self._entries)
