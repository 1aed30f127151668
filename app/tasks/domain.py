"""Task states, the transition rule and retry pacing. Pure: no I/O."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta


class State(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAIL = "fail"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def rank(self) -> int:
        return _RANK[self]


TERMINAL = frozenset({State.SUCCESS, State.FAIL})
_RANK = {State.PENDING: 0, State.PROCESSING: 1, State.SUCCESS: 2, State.FAIL: 2}
TIMED_OUT_MSG = "Task timed out"
# The failCode of a task its client canceled, or whose Cancel-After deadline passed (failMsg says which).
CANCELED = "canceled"
# Retry jitter has a generator of its own: nothing else's use of `random` shifts it, nor it theirs.
JITTER = random.Random()


@dataclass(frozen=True)
class Update:
    """What a provider says about a task, in imagehook's terms."""

    state: State
    image_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_msg: str | None = None
    cost_time_ms: int | None = None
    upstream_id: str | None = None
    credits: float | None = None  # what the provider charged, when it says
    completed_at: datetime | None = None  # when the provider says it finished, if it says


def states_before(state: State) -> tuple[State, ...]:
    """States a task may move from into `state`: strictly earlier ones only.

    This is the whole transition rule. Nothing leaves a terminal state and nothing
    moves backwards, so a duplicate or stale update changes nothing.
    """
    return tuple(s for s in State if s.rank < state.rank)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped."""

    base_s: float
    cap_s: float
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        # The exponent is bounded so very late attempts stay at the cap instead of overflowing.
        ceiling = min(self.cap_s, self.base_s * self.factor ** min(max(attempt - 1, 0), 64))
        # Jitter between half and the full step keeps replicas from moving in lockstep
        # while still guaranteeing progress away from a struggling upstream.
        return ceiling * (0.5 + 0.5 * (rng or JITTER).random())


def retry_at(
    backoff: Backoff, attempt: int, now: datetime, give_up_at: datetime, retry_after: float | None = None
) -> datetime | None:
    """When to make `attempt` after a transient failure: one backoff step from now, or later if
    the other side asked (its Retry-After, in seconds); None if that falls past give_up_at."""
    at = now + timedelta(seconds=max(backoff.delay(attempt), retry_after or 0))
    return None if at > give_up_at else at
