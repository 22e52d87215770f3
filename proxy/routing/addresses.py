"""Which addresses the proxy connects to on a partner's behalf: the guard against server-side
request forgery, shared by webhooks (`proxy.api.webhook_urls`) and partner-registered
upstreams (`proxy.api.upstream_urls` at registration, `proxy.forward.dial` at every dial).

An address is allowed when it is globally routable: not loopback, private, link-local, shared
(CGNAT, 100.64.0.0/10), reserved, documentation, multicast or unspecified, nor an IPv6 form
that embeds such an IPv4 address (IPv4-mapped, 6to4, NAT64). `allow_private` (development and
tests) lets private, loopback and link-local addresses through; multicast and unspecified
never pass.

`address_allowed` and `host_refusal` are pure: the latter judges a URL's host by its form (an
IP literal by its address; a name must be a DNS name, not an IPv4 address in another notation
such as `2130706433` or `0x7f.1`, which resolvers would decode, nor this machine's name).
`resolve_host` asks Trio's resolver (the system's, in a thread) where a name leads now.

Errors: `resolve_host` raises `Unresolved` (an OSError) when the name does not resolve.
Cancellation: the lookup is abandoned when cancelled.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import trio

__all__ = ["Unresolved", "address_allowed", "host_refusal", "ip_literal", "resolve_host"]

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_LOCAL_NAMES = ("localhost", "localhost.localdomain")

PRIVATE_ADDRESS = "must not point at a private, loopback or link-local address"


class Unresolved(OSError):
    """The host name does not resolve (now)."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _routable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    flags = (
        address.is_private,
        address.is_loopback,
        address.is_link_local,
        address.is_multicast,
        address.is_reserved,
        address.is_unspecified,
        isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
    )
    return address.is_global and not any(flags)


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Whether the proxy may connect to `address` (an IP literal, maybe with an IPv6 zone)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if ip.is_multicast or ip.is_unspecified:
        return False
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not _routable(embedded):
            return False
    return _routable(ip)


def ip_literal(host: str) -> bool:
    """Whether `host` is an IP address in its standard notation (an IPv6 one maybe with a zone)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_refusal(host: str, *, allow_private: bool) -> str | None:
    """Why a URL's `host` (as its parser gives it: no brackets, no port) is refused by its
    form, or None; a name that passes may still resolve anywhere (`resolve_host`)."""
    if ip_literal(host):
        return None if address_allowed(host, allow_private=allow_private) else PRIVATE_ADDRESS
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "host is not a valid DNS name"
    if labels[-1].isdigit() or labels[-1].startswith("0x"):  # an IPv4 address in another form
        return "host is not a valid DNS name"
    if not allow_private and (name in _LOCAL_NAMES or name.endswith(".localhost")):
        return "must not point at this machine"
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` leads to now, in the resolver's order, without repeats: the host
    itself for an IP literal, else the resolver's answer (Unresolved if there is none)."""
    if ip_literal(host):
        return [host]
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as error:
        raise Unresolved(f"{host} does not resolve: {error}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Unresolved(f"{host} does not resolve")
    return addresses
