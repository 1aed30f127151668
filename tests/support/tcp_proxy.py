"""A TCP proxy on loopback that can cut the line to a server, the way networks fail.

- forward: bytes flow both ways, new connections reach the target;
- refuse: the listener is closed (new connections are refused) and every open connection is
  reset, as when the server's host goes down;
- partition: open connections stay open but every byte, either way, is silently dropped; new
  connections are accepted and never forwarded, as when packets vanish on the way.

Back to forward, connections that lost bytes in a partition are reset (their streams are broken,
as TCP would find out), and those that stayed quiet carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct

LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


class Mode(enum.Enum):
    FORWARD = "forward"
    REFUSE = "refuse"
    PARTITION = "partition"


class Link:
    """One client connection and, unless it was accepted during a partition, its upstream."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter | None) -> None:
        self.client, self.upstream = client, upstream
        self.lost_bytes = upstream is None
        self.pumps: list[asyncio.Task[None]] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [writer for writer in (self.client, self.upstream) if writer is not None]

    def close(self, *, reset: bool) -> None:
        """Close both sides; with reset, with a RST rather than a FIN: what a peer sees when the host is gone."""
        for writer in self.writers():
            if reset:
                with contextlib.suppress(OSError):
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                writer.transport.abort()
            else:
                writer.close()
        for pump in self.pumps:
            pump.cancel()


class TcpProxy:
    """Listens on 127.0.0.1:port (the same port across refuse and forward) and relays to target."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = Mode.FORWARD
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[Link] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def forward(self) -> None:
        for link in [link for link in self._links if link.lost_bytes]:
            self._drop(link, reset=True)
        self.mode = Mode.FORWARD
        if self._server is None:
            await self.start()

    async def refuse(self) -> None:
        self.mode = Mode.REFUSE
        await self._stop_listening()
        for link in list(self._links):
            self._drop(link, reset=True)

    def partition(self) -> None:
        self.mode = Mode.PARTITION

    async def close(self) -> None:
        await self.refuse()

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.PARTITION:
            link = Link(writer, None)
            self._links.add(link)
            link.pumps = [asyncio.create_task(self._pump(link, reader, None))]
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = Link(writer, up_writer)
        self._links.add(link)
        link.pumps = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    async def _pump(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
        """Relay one direction until either side closes; in a partition, read and drop."""
        try:
            while data := await reader.read(65536):
                if self.mode is Mode.FORWARD and writer is not None:
                    writer.write(data)
                    await writer.drain()
                else:
                    link.lost_bytes = True
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._drop(link, reset=False)

    def _drop(self, link: Link, *, reset: bool) -> None:
        if link in self._links:
            self._links.discard(link)
            link.close(reset=reset)
