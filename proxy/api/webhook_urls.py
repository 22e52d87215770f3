"""Where webhooks may be sent: the guard against server-side request forgery.

A webhook URL is parsed by httpx, the parser deliveries use, so what is checked is what is
called. It must be https, name a host (a DNS name or an IP literal) and carry no credentials,
no fragment and nothing the parser had to guess at. Its host must not be, or resolve to, an
address that is loopback, private, link-local, shared (CGNAT), reserved, multicast or
unspecified, or an IPv6 form that embeds one (IPv4-mapped, 6to4, NAT64): only globally
routable addresses (the classification is `proxy.routing.addresses`, shared with partners'
upstreams). `allow_private` (`[api] webhooks_allow_private`, for development and tests) lets
private, loopback and link-local addresses and plain http through.

`check_url` is pure; `resolve` asks the system resolver, checks every address it gives, and
returns them so the caller connects to an address it checked (no second lookup that could
answer differently). The API checks at creation; every delivery checks again, since DNS may
change.

Errors: `RefusedUrl` (a ValueError) says why a URL or an address is refused; `resolve` raises
`Unresolved` (an OSError) when the name does not resolve. Cancellation: `resolve` runs the
lookup in a thread and abandons it when cancelled.
"""

from __future__ import annotations

import httpx

from proxy.routing.addresses import Unresolved, address_allowed, host_refusal, resolve_host

__all__ = ["MAX_URL", "RefusedUrl", "Unresolved", "address_allowed", "check_url", "resolve"]

MAX_URL = 2048


class RefusedUrl(ValueError):
    """A URL or address webhooks are not sent to; the message says why."""


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
    refusal = host_refusal(host, allow_private=allow_private)
    if refusal is not None:
        raise RefusedUrl(refusal)
    return parsed


async def resolve(url: httpx.URL, *, allow_private: bool) -> list[str]:
    """The addresses of `url`'s host, every one allowed (RefusedUrl if any is not; Unresolved
    if there are none), in the resolver's order."""
    host = url.raw_host.decode("ascii")
    addresses = await resolve_host(host, url.port or (443 if url.scheme == "https" else 80))
    refused = [a for a in addresses if not address_allowed(a, allow_private=allow_private)]
    if refused:
        raise RefusedUrl(f"{host} resolves to an address webhooks are not sent to")
    return addresses
