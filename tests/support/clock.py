"""A clock for Deps that a test moves on: the real time, plus every step the test took."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.deps import utc_now


class SteppedClock:
    """Reads as utc_now() plus the sum of advance() calls, so deadlines pass without waiting them out."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.ahead

    def advance(self, by: timedelta) -> None:
        self.ahead += by
