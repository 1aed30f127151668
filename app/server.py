"""How imagehook is served: the uvicorn configuration, a server that drains before it stops, and an
HTTP protocol that bounds slow clients.

uvicorn on its own only times out idle keep-alive connections, so a client that sends half a request
and stops holds its connection forever. `BoundedHttpProtocol` gives each request `header_timeout_s` to
deliver its headers and then `body_timeout_s` for its body, and keeps a server at `max_connections`:
a newcomer at the cap displaces the connection that has waited longest for a request, so a flood of
half-sent requests cannot lock real clients out. Once a request has fully arrived nothing is timed,
so long-polls and event streams run as long as they need.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.settings import Settings

# Far above what any client of this API sends (a browser's cookies included), far below a memory problem.
MAX_HEADER_BYTES = 64 * 1024
HEADERS_END = b"\r\n\r\n"
REFUSED_LINGER_S = 1.0
# At shutdown, an idle connection stays open this long for a request that may already be on its way.
SHUTDOWN_LINGER_S = 0.5


def build_config(app: object, host: str, port: int, settings: Settings) -> uvicorn.Config:
    # One waiting list per server: servers sharing a process must not evict each other's connections.
    protocol = functools.partial(BoundedHttpProtocol, settings=settings, waiting=WaitingConnections())
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        http=protocol,  # type: ignore[arg-type]
        # No route speaks WebSocket, and an upgraded connection would leave these bounds behind.
        ws="none",
        # uvicorn's access log would print raw paths, and callback paths carry per-task secrets:
        # app/observe/requests.py logs each request by its route template instead.
        access_log=False,
        log_config=None,  # uvicorn's own lines go through the root logger: LOG_FORMAT applies to them too
        lifespan="on",
        # On SIGTERM, requests still running after this are cancelled (GracefulServer).
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
    )


class GracefulServer(uvicorn.Server):
    """uvicorn's Server, shutting down in the order a load balancer needs.

    On SIGTERM it first only says it is draining (`/readyz` answers 503) and goes on serving for
    SHUTDOWN_DELAY_S, so balancers stop sending it requests; then uvicorn stops accepting, and the
    app is told (`app.state.drain`) before requests in flight are waited for: long-polls and event
    streams answer with what they have instead of holding the shutdown up, and background rounds
    wind down alongside, all within SHUTDOWN_GRACE_S. SIGINT (Ctrl-C), or a second signal, skips
    the delay."""

    def __init__(self, config: uvicorn.Config, app: Any, delay_s: float) -> None:
        super().__init__(config)
        self.app, self.delay_s = app, delay_s
        self.draining_since: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGTERM and self.draining_since is None and self.delay_s > 0:
            self._captured_signals.append(sig)  # uvicorn raises it again once it has shut down
            self.draining_since = time.monotonic()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.draining_since is not None:
            self._app_hook("announce_draining")
            if time.monotonic() >= self.draining_since + self.delay_s:
                return True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self._app_hook("drain")
        await super().shutdown(sockets)

    def _app_hook(self, name: str) -> None:
        """Call app.state.<name>() if the app has set it (the bench's bare app has not)."""
        hook = getattr(getattr(self.app, "state", None), name, None)
        if hook is not None:
            hook()


class WaitingConnections:
    """One server's connections that are waiting for a request's headers, longest-waiting first."""

    def __init__(self) -> None:
        self._since: dict[BoundedHttpProtocol, None] = {}  # a dict keeps insertion order

    def add(self, connection: BoundedHttpProtocol) -> None:
        self._since.pop(connection, None)
        self._since[connection] = None

    def discard(self, connection: BoundedHttpProtocol) -> None:
        self._since.pop(connection, None)

    def oldest(self) -> BoundedHttpProtocol | None:
        return next(iter(self._since), None)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on receiving a request and a cap on connections.

    A connection is waiting from when it is made, or its last response is complete, until the next
    request's headers are in; only waiting connections are evicted. One deadline runs at a time:
    the headers' (from the connection or the request's first byte) and then the body's.
    """

    def __init__(self, *args: Any, settings: Settings, waiting: WaitingConnections, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings, self.waiting = settings, waiting
        self.deadline: asyncio.TimerHandle | None = None
        self.header_bytes = 0  # received since the current request's headers began; None once they are in
        self.header_tail = b""  # the last bytes of the headers so far, where their end may begin
        self.refused = False
        self.draining = False  # shutdown has begun: one more request at most, then close
        self.heard_while_draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.settings.max_connections and not self._evict_oldest_waiting():
            # Every connection is busy with a request: this one gets a 503 once its headers are in.
            self.app = JSONResponse({"error": "Too many connections"}, status_code=503, headers={"Connection": "close"})
        self.waiting.add(self)
        self._set_deadline(self.settings.header_timeout_s, self._headers_too_slow)

    def shutdown(self) -> None:
        """Shutdown has begun. uvicorn would close an idle connection at once, cutting off a request
        the client sent a moment ago; instead it gets SHUTDOWN_LINGER_S to arrive, is answered with
        `Connection: close`, and only a connection that stayed silent is closed."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answer this request, then close
            return
        self.draining = True
        self.loop.call_later(SHUTDOWN_LINGER_S, self._close_if_silent)

    def _close_if_silent(self) -> None:
        if not self.heard_while_draining:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.heard_while_draining = self.draining
        # httptools keeps headers in memory however large they grow: bound them.
        if self.refused:
            return  # read and dropped: closing with unread data would reset the line, losing the answer
        if self.header_bytes is not None:
            self.header_bytes += self._header_share(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, f"Request headers larger than {MAX_HEADER_BYTES} bytes")
                return
        super().data_received(data)

    def _header_share(self, data: bytes) -> int:
        """How many bytes of `data` belong to the headers: up to the blank line that ends them (found
        across reads too), not the body that may come in the same read."""
        seen = self.header_tail + data
        self.header_tail = seen[-(len(HEADERS_END) - 1) :]
        end = seen.find(HEADERS_END)
        return len(data) if end < 0 else max(0, end + len(HEADERS_END) - (len(seen) - len(data)))

    def _refuse(self, status: int, error: str) -> None:
        """Answer, end our side, and close a moment later, whatever the client still sends meanwhile."""
        self.refused = True
        self._clear_deadline()
        self.transport.write(error_response(status, error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_S, self.transport.close)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = self.header_bytes or 0
        if self.deadline is None:  # a later request on a kept-alive connection
            self._set_deadline(self.settings.header_timeout_s, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self.header_bytes, self.header_tail = None, b""
        super().on_headers_complete()
        if self.draining:
            self.cycle.keep_alive = False
        self.waiting.discard(self)
        self._set_deadline(self.settings.body_timeout_s, self.transport.close)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._clear_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:  # not a pipelined request
            self.waiting.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._clear_deadline()
        self.waiting.discard(self)

    def send_400_response(self, msg: str) -> None:
        """A request that is not HTTP gets a JSON error too, like every other error of the service."""
        self._refuse(400, msg)

    def _evict_oldest_waiting(self) -> bool:
        victim = self.waiting.oldest()
        if victim is None:
            return False
        victim.waiting.discard(victim)
        victim.connections.discard(victim)  # counted out now: its connection_lost comes later
        victim.transport.close()
        return True

    def _headers_too_slow(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # nothing is being sent on this connection
            error = f"Request headers not received within {self.settings.header_timeout_s:g} s"
            self.transport.write(error_response(408, error))
        self.transport.close()

    def _set_deadline(self, seconds: float, expire: Callable[[], object]) -> None:
        self._clear_deadline()
        self.deadline = self.loop.call_later(seconds, expire)

    def _clear_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None


def error_response(status: int, error: str) -> bytes:
    """A whole `{"error": ...}` response that closes the connection, written outside any request cycle."""
    body = json.dumps({"error": error}).encode()
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    return STATUS_LINE[status] + head + body
