"""Where webhooks may be sent: the guard against server-side request forgery.

A webhook URL is parsed by httpx, the parser deliveries use, so what is checked is what is
called. It must be https, name a host (a DNS name or an IP literal) and carry no credentials,
no fragment and nothing the parser had to guess at. Its host must not be, or resolve to, an
address that is loopback, private, link-local, shared (CGNAT), reserved, multicast or
unspecified, or an IPv6 form that embeds one (IPv4-mapped, 6to4, NAT64): only globally
routable addresses. `allow_private` (`[api] webhooks_allow_private`, for development and tests)
lets private, loopback and link-local addresses and plain http through.

`check_url` is pure; `resolve` asks the system resolver, checks every address it gives, and
returns them so the caller connects to an address it checked (no second lookup that could
answer differently). The API checks at creation; every delivery checks again, since DNS may
change.

Errors: `RefusedUrl` (a ValueError) says why a URL or an address is refused; `resolve` raises
`Unresolved` (an OSError) when the name does not resolve. Cancellation: `resolve` runs the
lookup in a thread and abandons it when cancelled.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import httpx
import trio

__all__ = ["MAX_URL", "RefusedUrl", "Unresolved", "address_allowed", "check_url", "resolve"]

MAX_URL = 2048
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


class RefusedUrl(ValueError):
    """A URL or address webhooks are not sent to; the message says why."""


class Unresolved(OSError):
    """The URL's host name does not resolve (now)."""


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
    """Whether a delivery may connect to `address` (an IP literal, maybe with an IPv6 zone)."""
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


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_url(url: str, *, allow_private: bool) -> httpx.URL:
    """`url` parsed as deliveries will use it, if webhooks may be sent there (RefusedUrl if
    not). A host name is checked by its form here; `resolve` checks where it leads."""
    if len(url) > MAX_URL:
        raise RefusedUrl(f"at most {MAX_URL} characters")
    if not url.isprintable() or " " in url or "\\" in url:
        raise RefusedUrl("must not contain spaces, backslashes or control characters")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
        host = parsed.raw_host.decode("ascii")
        _ = parsed.host  # decodes IDNA labels: an invalid one raises here, not at delivery
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise RefusedUrl("is not a valid URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise RefusedUrl("must be an https:// URL")
    if parsed.userinfo:
        raise RefusedUrl("must not carry credentials (user:password@)")
    if parsed.fragment:
        raise RefusedUrl("must not have a fragment (#...)")
    if port is not None and not 1 <= port <= 65535:
        raise RefusedUrl("port out of range")
    if not host:
        raise RefusedUrl("must name a host")
    if _ip_literal(host):
        if not address_allowed(host, allow_private=allow_private):
            raise RefusedUrl("must not point at a private, loopback or link-local address")
        return parsed
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise RefusedUrl("host is not a valid DNS name")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):  # an IPv4 address in another form
        raise RefusedUrl("host is not a valid DNS name")
    if not allow_private and (name in _LOCAL_NAMES or name.endswith(".localhost")):
        raise RefusedUrl("must not point at this machine")
    return parsed


async def resolve(url: httpx.URL, *, allow_private: bool) -> list[str]:
    """The addresses of `url`'s host, every one allowed (RefusedUrl if any is not; Unresolved
    if there are none), in the resolver's order."""
    host = url.raw_host.decode("ascii")
    if _ip_literal(host):
        addresses = [host]
    else:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError) as error:
            raise Unresolved(f"{host} does not resolve: {error}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Unresolved(f"{host} does not resolve")
    refused = [a for a in addresses if not address_allowed(a, allow_private=allow_private)]
    if refused:
        raise RefusedUrl(f"{host} resolves to an address webhooks are not sent to")
    return addresses
