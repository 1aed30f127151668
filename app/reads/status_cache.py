"""Status bodies of recently read tasks, already serialized, so a repeated read costs no query.

An entry is only ever served as current while something guarantees it is:
- this process's own writes drop their tasks' entries as they commit (Deps.task_changed), so a
  read that starts after a callback was answered never sees the older state;
- on PostgreSQL, every replica's writes arrive as NOTIFYs (app/reads/watch.py) and drop entries here;
  while that LISTEN connection is down no entry is current;
- on SQLite, triggers record every task a commit changed, whoever made it (task_changes), and a
  watcher (app/reads/watch.py) drops those tasks' entries within FRESHNESS_POLL_S; while it is not
  running no entry is current, and if it fell so far behind that changes were pruned unread, none
  stored before is.
A queued task's place in line moves with other tasks' sends, which drop nothing here: its entry holds
the status without the place (`line` names the line it waits in), and the place is added as it is
served, from a recent read of that line (app/tasks/status.py with_place).

Dropped entries are kept, though, as the last status this process knew of each task: while
the database is unavailable, a read is answered with that (stale-if-error) instead of a 503.

A body carrying signed URLs is never served, current or last known, once those URLs have less than
their promised lifetime left (`servable_until`, app/tasks/links.py): the next read signs anew.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class CachedStatus:
    owner: int  # api key id: the entry is only ever served to the task's owner
    terminal: bool
    body: bytes  # the status object as JSON
    # Unix time past which it is not served though nothing dropped it: finite when the body carries signed URLs.
    servable_until: float = math.inf
    line: str | None = None  # the provider whose create line the task waits in: its place is added when served


class _Entry(NamedTuple):
    status: CachedStatus
    generation: int  # current while it equals the cache's generation


DROPPED = -1  # the generation of an entry that is no longer current


class StatusCache:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock  # Unix time, for servable_until
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._enabled = False
        # Bumped by clear(): every entry stored before is no longer current, in one step.
        self._generation = 0
        # Bumped by every invalidation: a read that began before one must not store what it read as current.
        self.epoch = 0

    def get(self, task_id: str) -> CachedStatus | None:
        """The task's status, if it is known to be current."""
        entry = self._entries.get(task_id)
        if entry is None or entry.generation != self._generation:
            return None
        # Inline, as this is the hot path: most bodies are servable until dropped and cost no clock reading.
        if entry.status.servable_until != math.inf and self.clock() >= entry.status.servable_until:
            return None
        self._entries.move_to_end(task_id)
        return entry.status

    def last_known(self, task_id: str) -> CachedStatus | None:
        """The last status read for the task, current or not (unless its signed URLs are running out)."""
        entry = self._entries.get(task_id)
        if entry is None or self.clock() >= entry.status.servable_until:
            return None
        return entry.status

    def put(self, task_id: str, status: CachedStatus, read_at_epoch: int) -> None:
        """Remember what a read found; it is current only if nothing changed since the read began."""
        if self.max_entries <= 0:
            return
        current = self._enabled and read_at_epoch == self.epoch
        self._entries[task_id] = _Entry(status, self._generation if current else DROPPED)
        self._entries.move_to_end(task_id)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, task_id: str) -> None:
        self.epoch += 1
        entry = self._entries.get(task_id)
        if entry is not None:
            self._entries[task_id] = entry._replace(generation=DROPPED)

    def clear(self) -> None:
        """No entry is current any more (all are still known)."""
        self.epoch += 1
        self._generation += 1

    def enable(self, enabled: bool) -> None:
        """Serve entries only while changes are being heard; either way, none is current now."""
        self._enabled = enabled
        self.clear()

    def __len__(self) -> int:
        return len(self._entries)
