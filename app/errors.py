"""Errors, and how each reaches a client.

GatewayError                 answered as {"error": message} with .status
 ├── BadRequest              400  invalid input, named field
 ├── UpstreamRejected        400  "Kie.ai error: <upstream msg>"
 ├── Unauthorized            401
 ├── PaymentRequired         402  the key's daily or monthly credit budget is reached
 ├── Forbidden               403  a cookie-authenticated request that may be cross-site
 ├── NotFound                404  unknown task, or another client's task
 ├── Conflict                409  an Idempotency-Key reused with another request
 ├── PayloadTooLarge         413
 ├── TooManyRequests         429  the key's submission rate or tasks in flight; with Retry-After
 ├── NotConfigured           500  "Kie.ai API key not configured"
 ├── BadGateway              502  an upstream's answer cannot be used (a result image that cannot be read)
 └── Unavailable             503  a service imagehook relies on is out; retry later
      └── DatabaseUnavailable     the database is unreachable or did not answer within
                                  DATABASE_TIMEOUT_S (app/db/outage.py); with Retry-After

RetryLater                   an attempt failed for now: try again, no sooner than retry_after
GiveUp                       an attempt failed for good: trying again is pointless

ProviderError                raised by provider clients, never shown raw
 ├── ProviderUnavailable     transient: timeout, 429, 5xx, 455 -> retry later (also a RetryLater)
 │    └── ProviderTimeout         no answer in time (it may still have acted)
 └── ProviderRejected        definitive: the upstream refused the request
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(GatewayError):
    status = 400


class UpstreamRejected(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class NotFound(GatewayError):
    status = 404


class PaymentRequired(GatewayError):
    status = 402


class TooManyRequests(GatewayError):
    status = 429


class Conflict(GatewayError):
    status = 409


class PayloadTooLarge(GatewayError):
    status = 413


class NotConfigured(GatewayError):
    status = 500


class BadGateway(GatewayError):
    status = 502


class Unavailable(GatewayError):
    status = 503


class DatabaseUnavailable(Unavailable):
    """Raised by the engine for every kind of database outage: nothing was decided, so a retry is safe."""

    RETRY_AFTER_S = 2

    def __init__(self) -> None:
        super().__init__("Database unavailable; retry shortly", headers={"Retry-After": str(self.RETRY_AFTER_S)})


class RetryLater(Exception):
    """How every background attempt (a provider create, an image copy, a webhook) says "not now":
    retry_after is the other side's hint in seconds, if any; the retry waits for it when it is
    longer than the backoff step (app/tasks/domain.py retry_at)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, retry_after={self.retry_after})"


class GiveUp(Exception):
    """A background attempt that can never succeed as it stands: its row is settled as failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ProviderError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code})"


class ProviderUnavailable(ProviderError, RetryLater):
    """Worth retrying later; retry_after is the upstream's hint in seconds, if any. maybe_created:
    the request may have reached the provider and been acted on (a timeout or a connection lost
    while waiting for the answer), so a create must not be repeated at once."""

    def __init__(
        self, message: str, code: int | None = None, retry_after: float | None = None, *, maybe_created: bool = False
    ) -> None:
        super().__init__(message, code)
        self.retry_after, self.maybe_created = retry_after, maybe_created


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer in time (it may still have acted on the request)."""


class ProviderRejected(ProviderError):
    """The upstream will not accept this request as it stands; retrying is pointless."""
