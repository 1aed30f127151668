"""The address policy for outbound requests, and what the pinned client does before it connects
(in process: nothing here reaches a socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address, ip_network

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.outbox.outbound import DestinationRefused, copy_policy, is_public, pinned_client, webhook_policy
from tests.support.resolvers import Scripted

REFUSED = {
    # IPv4
    "127.0.0.1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "0.0.0.0": "this network",
    "0.1.2.3": "this network",
    "100.64.0.1": "CGNAT",
    "100.127.255.254": "CGNAT",
    "169.254.169.254": "cloud metadata (link-local)",
    "192.0.0.8": "IETF protocol assignments (is_global misses it)",
    "192.0.0.171": "IETF protocol assignments",
    "192.0.2.1": "documentation",
    "198.18.0.1": "benchmarking",
    "198.19.255.255": "benchmarking",
    "240.0.0.1": "reserved",
    "255.255.255.255": "broadcast",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    # IPv6
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "unique local",
    "fd00:ec2::254": "unique local (cloud metadata)",
    "ff02::1": "multicast",
    "ff0e::1": "global-scope multicast",
    "2001:db8::1": "documentation",
    # IPv6 forms of IPv4 addresses
    "::ffff:127.0.0.1": "IPv4-mapped loopback",
    "::ffff:169.254.169.254": "IPv4-mapped metadata",
    "::127.0.0.1": "IPv4-compatible loopback",
    "::10.0.0.1": "IPv4-compatible private",
    "::ffff:0:127.0.0.1": "IPv4-translated loopback",
    "::ffff:0:a9fe:a9fe": "IPv4-translated metadata",
    "64:ff9b::7f00:1": "NAT64 loopback",
    "64:ff9b::a9fe:a9fe": "NAT64 metadata",
    "64:ff9b::a00:1": "NAT64 private",
    "64:ff9b:1::808:808": "NAT64 local-use, whatever it carries",
    "2002:7f00:1::": "6to4 loopback",
    "2002:a9fe:a9fe::": "6to4 metadata",
    "2002:c0a8:101::1": "6to4 private",
    "2001:0:a9fe:a9fe::": "Teredo server metadata",
    "2001:0:808:808:0:0:80ff:fffe": "Teredo client loopback (stored inverted)",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7": "Teredo, even with a public server and client",
    "2606:4700::5efe:7f00:1": "ISATAP loopback",
    "2606:4700::200:5efe:a9fe:a9fe": "ISATAP (universal id) metadata",
    "2606:4700::5efe:c0a8:101": "ISATAP private",
}
ALLOWED = {
    "8.8.8.8": "public",
    "1.1.1.1": "public",
    "93.184.215.14": "public",
    "2606:4700:4700::1111": "public",
    "2a00:1450:4001:800::200e": "public",
    "64:ff9b::808:808": "NAT64 of a public address, as DNS64 answers on IPv6-only networks",
    "2606:4700::5efe:808:808": "ISATAP of a public address",
    "2606:4700::200:5efe:101:101": "ISATAP (universal id) of a public address",
}


@pytest.mark.parametrize(
    ("address", "allowed"),
    [pytest.param(a, False, id=f"{a} {why}") for a, why in REFUSED.items()]
    + [pytest.param(a, True, id=f"{a} {why}") for a, why in ALLOWED.items()],
)
def test_address_policy(address: str, allowed: bool) -> None:
    assert is_public(ip_address(address)) is allowed


NOT_PUBLIC_V4 = [
    ip_network(net)
    for net in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12")
    + ("192.168.0.0/16", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "224.0.0.0/4")
]


def addresses_in(networks: Sequence[IPv4Network]) -> st.SearchStrategy[IPv4Address]:
    def within(net: IPv4Network) -> st.SearchStrategy[IPv4Address]:
        return st.integers(int(net.network_address), int(net.broadcast_address)).map(IPv4Address)

    return st.sampled_from(networks).flatmap(within)


bits = st.integers(0, 2**80 - 1)


def embeddings(v: IPv4Address, other: IPv4Address, rest: int) -> dict[str, IPv6Address]:
    """Every IPv6 form that carries v; `other` and `rest` fill the parts that do not."""
    x, teredo, isatap_prefix = int(v), 0x2001_0000 << 96, 0x2606_4700_0000_0000 | (rest & 0xFFFF_FFFF)
    return {
        "mapped": IPv6Address(0xFFFF << 32 | x),
        "compatible": IPv6Address(x),
        "translated": IPv6Address(0xFFFF << 48 | x),
        "nat64": IPv6Address(0x64_FF9B << 96 | x),
        "nat64-local": IPv6Address(0x64_FF9B_0001 << 80 | (rest & 0xFFFF) << 32 | x),
        "6to4": IPv6Address(0x2002 << 112 | x << 80 | rest),
        "teredo-server": IPv6Address(teredo | x << 64 | (rest & (2**64 - 1))),
        "teredo-client": IPv6Address(teredo | int(other) << 64 | (rest & 0xFFFF_FFFF) << 32 | x ^ 0xFFFF_FFFF),
        "isatap": IPv6Address(isatap_prefix << 64 | 0x5EFE << 32 | x),
        "isatap-universal": IPv6Address(isatap_prefix << 64 | 0x0200_5EFE << 32 | x),
    }


@given(v=addresses_in(NOT_PUBLIC_V4), other=addresses_in([ip_network("0.0.0.0/0")]), rest=bits)
def test_every_ipv6_form_of_a_non_public_ipv4_address_is_refused(v: IPv4Address, other: IPv4Address, rest: int) -> None:
    assert not is_public(v)
    forms = embeddings(v, other, rest)
    assert [name for name, address in forms.items() if is_public(address)] == []


@given(v=addresses_in([ip_network("0.0.0.0/0")]))
def test_nat64_and_isatap_forms_are_allowed_exactly_when_their_ipv4_address_is(v: IPv4Address) -> None:
    forms = embeddings(v, v, 0)
    assert is_public(forms["nat64"]) is is_public(forms["isatap"]) is is_public(v)


def test_webhooks_reach_private_addresses_only_when_allowed() -> None:
    loopback, public = ip_address("127.0.0.1"), ip_address("8.8.8.8")
    assert webhook_policy(False)("hook.test", public)
    assert not webhook_policy(False)("hook.test", loopback)
    assert webhook_policy(True)("hook.test", loopback)


def test_an_allowlisted_ip_literal_admits_that_address_through_that_literal_only() -> None:
    policy = copy_policy(("*.kie.ai", "127.0.0.1", "::1"))
    assert policy("127.0.0.1", ip_address("127.0.0.1"))
    assert policy("::1", ip_address("::1"))
    assert policy("cdn.kie.ai", ip_address("8.8.8.8"))
    assert not policy("cdn.kie.ai", ip_address("127.0.0.1"))  # a name must resolve to public addresses
    assert not policy("127.0.0.2", ip_address("127.0.0.2"))  # another loopback address is not named
    assert not policy("localhost", ip_address("127.0.0.1"))
    assert not copy_policy(("*.kie.ai",))("127.0.0.1", ip_address("127.0.0.1"))


async def test_a_name_with_one_refused_answer_is_refused_without_connecting() -> None:
    resolver = Scripted({"mixed.test": [["93.184.215.14", "127.0.0.1"]]})
    async with pinned_client(webhook_policy(False), resolver) as http:
        with pytest.raises(DestinationRefused, match=r"mixed\.test \(127\.0\.0\.1\): not a public address"):
            await http.get("http://mixed.test/hook")
    assert resolver.lookups == {"mixed.test": 1}


async def test_a_literal_is_checked_like_a_name() -> None:
    async with pinned_client(webhook_policy(False)) as http:
        for url in ("http://127.0.0.1:9/", "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::7f00:1]/"):
            with pytest.raises(DestinationRefused, match="not a public address"):
                await http.get(url)


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with pinned_client(webhook_policy(False), failing) as http:
        with pytest.raises(httpx.ConnectError, match="unknown.test cannot be resolved: .*not known"):
            await http.get("http://unknown.test/")
    async with pinned_client(webhook_policy(False), Scripted({"empty.test": [[]]})) as http:
        with pytest.raises(httpx.ConnectError, match="empty.test cannot be resolved"):
            await http.get("http://empty.test/")


async def test_a_slow_lookup_counts_towards_the_connect_timeout() -> None:
    async def hanging(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["93.184.215.14"]

    async with pinned_client(webhook_policy(False), hanging) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get("http://slow.test/", timeout=0.2)
