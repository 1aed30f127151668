"""Requests to destinations that others choose (client webhooks, result copies), which must never
reach imagehook's own networks.

`is_public` is the address policy. `PinnedBackend` resolves a host once per connection, applies a
policy to every answer and connects to an address it checked, so a DNS answer that changes between a
check and the connect (rebinding) cannot slip through. TLS still names and verifies the URL's host:
httpcore hands that host to `start_tls` as `server_hostname`, whatever address the socket reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import httpcore
import httpx

from app.settings import Settings

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]  # (host, port) -> IP literals, in the order to try
Policy = Callable[[str, IPAddress], bool]  # (the URL's host, one of its addresses) -> may connect

# Not globally reachable, though Python 3.11's `is_global` knows only parts of 192.0.0.0/24. NAT64's
# local-use prefix puts IPv4 addresses wherever its operator chooses, so what it carries cannot be checked.
NEVER_PUBLIC = (ip_network("192.0.0.0/24"), ip_network("64:ff9b:1::/48"))
# IPv6 forms whose last 32 bits are an IPv4 address: IPv4-compatible, -mapped, -translated, NAT64.
IPV4_IN_LAST_32 = tuple(ip_network(net) for net in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
ISATAP_IDS = (0x0000_5EFE, 0x0200_5EFE)  # the upper half of an ISATAP interface id; the lower is IPv4
# httpx's own defaults, which its transport would use.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


def is_public(address: IPAddress) -> bool:
    """Globally reachable unicast, and so is every IPv4 address it embeds."""
    embedded = embedded_ipv4(address) if isinstance(address, IPv6Address) else []
    return all(_public_unicast(each) for each in (address, *embedded))


def _public_unicast(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast and not any(address in net for net in NEVER_PUBLIC)


def embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """Every IPv4 address a packet to `address` may be relayed to: Teredo's server and client, 6to4's,
    and the one in the last 32 bits of the forms above and of ISATAP interface ids."""
    found = list(address.teredo or ())
    if address.sixtofour:
        found.append(address.sixtofour)
    if _ends_in_ipv4(address):
        found.append(IPv4Address(int(address) & 0xFFFF_FFFF))
    return found


def _ends_in_ipv4(address: IPv6Address) -> bool:
    return any(address in net for net in IPV4_IN_LAST_32) or (int(address) >> 32) & 0xFFFF_FFFF in ISATAP_IDS


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def webhook_policy(allow_private: bool) -> Policy:
    """Public addresses only, unless WEBHOOK_ALLOW_PRIVATE (development, receivers on loopback)."""
    return lambda host, address: allow_private or is_public(address)


def copy_policy(allowed_hosts: Iterable[str]) -> Policy:
    """Public addresses, plus each IP literal the allowlist names, reached through that literal only:
    a name the allowlist matches (`*.kie.ai`) must still resolve to public addresses."""
    literals = {literal for host in allowed_hosts if (literal := ip_literal(host)) is not None}
    return lambda host, address: is_public(address) or (address in literals and ip_literal(host) == address)


# Lookups block a thread each, for as long as the resolver takes: they get threads of their own,
# so that names that never answer cannot take every thread the rest of the service runs work on.
DNS_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dns")


async def resolve(host: str, port: int) -> list[str]:
    """The system resolver's answers, each address once, in its order."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    infos = await asyncio.get_running_loop().run_in_executor(DNS_THREADS, lookup)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class DestinationRefused(Exception):
    """A connection the address policy forbids: retrying cannot help."""

    def __init__(self, host: str, address: str) -> None:
        where = address if ip_literal(host) else f"{host} ({address})"
        super().__init__(f"refused to connect to {where}: not a public address")


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses `policy` allows, each host resolved once and connected to by the
    address that was checked. A name with any refused answer is refused whole: it is hostile or broken."""

    def __init__(self, policy: Policy, resolver: Resolver = resolve) -> None:
        self.policy, self.resolver = policy, resolver
        self.backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):  # the resolution counts towards the connect timeout
                addresses = await self.checked_addresses(host, port)
                return await self.connect_first(
                    addresses, port, local_address=local_address, socket_options=socket_options
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None

    async def checked_addresses(self, host: str, port: int) -> Sequence[str]:
        try:
            addresses = await self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} cannot be resolved: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} cannot be resolved")
        for address in addresses:
            if not self.policy(host, ip_address(address)):
                raise DestinationRefused(host, address)
        return addresses

    async def connect_first(self, addresses: Sequence[str], port: int, **options: Any) -> httpcore.AsyncNetworkStream:
        """The first address that takes the connection, in the resolver's order (one family may have no route)."""
        for address in addresses[:-1]:
            with contextlib.suppress(httpcore.ConnectError):
                return await self.backend.connect_tcp(address, port, **options)
        return await self.backend.connect_tcp(addresses[-1], port, **options)

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (its request, response and error handling unchanged) over a connection pool
    that connects through `backend`; httpx 0.28 takes no network backend of its own, hence the swap."""

    def __init__(self, backend: PinnedBackend, *, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False, limits=LIMITS)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=backend,
        )


def pinned_client(
    policy: Policy, resolver: Resolver = resolve, *, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncClient:
    # trust_env=False: a proxy named in the environment would make the connection in our place, unchecked.
    transport = PinnedTransport(PinnedBackend(policy, resolver), verify=verify)
    return httpx.AsyncClient(transport=transport, trust_env=False)


@dataclass(frozen=True)
class Outbound:
    """One client per policy, so that no pooled connection made under one is reused under the other."""

    resolver: Resolver
    webhooks: httpx.AsyncClient
    copies: httpx.AsyncClient


@contextlib.asynccontextmanager
async def open_outbound(settings: Settings, resolver: Resolver = resolve) -> AsyncIterator[Outbound]:
    async with (
        pinned_client(webhook_policy(settings.webhook_allow_private), resolver) as webhooks,
        pinned_client(copy_policy(settings.fetch_allowed_hosts), resolver) as copies,
    ):
        yield Outbound(resolver, webhooks, copies)
