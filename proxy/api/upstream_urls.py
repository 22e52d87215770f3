"""Which back-offices partners may register for their chargers: the guard against server-side
request forgery on `POST /v1/chargers`.

A partner's upstream is dialled from inside the operator's network whenever its charger
connects, and the back-office's HTTP answers go back to the charger: without a guard a partner
could reach the operator's internal services through it. Beyond the registry's own rules
(`Route`: ws:// or wss://, no credentials in the URL), the upstream's host must pass
`proxy.routing.addresses.host_refusal` (no private, loopback, link-local, shared, reserved,
documentation, multicast or unspecified IP literal in any notation, no `localhost`), its port
must be 1-65535, it must match the operator's allow-list (`[api] partner_upstream_hosts`,
glob patterns, case-insensitive; empty: any host) and a name must not resolve, now, to an
address that is refused. A name that does not resolve (yet) is accepted, as for webhooks: the
proxy resolves it again at every dial and connects only to allowed addresses
(`proxy.forward.dial`), which also defeats a name that is changed later (DNS rebinding).
`[api] upstreams_allow_private` lets private, loopback and link-local upstreams through.

`upstream_refusal` is pure; `check_upstream` adds the lookup. Refusals never say what listens
at an address (nothing is ever connected to here) nor what the allow-list holds.

Errors: `RefusedUpstream` (a ValueError) carries the text shown to the partner.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

import trio

from proxy.routing.addresses import Unresolved, address_allowed, host_refusal, resolve_host
from proxy.runtime.config import ApiSettings

__all__ = ["NOT_ALLOWED", "RefusedUpstream", "UpstreamPolicy", "check_upstream", "upstream_refusal"]

RESOLVE_SECONDS = 5.0
NOT_ALLOWED = "this host is not allowed; ask your operator"
_RESOLVES_PRIVATE = "the host resolves to an address the proxy does not connect to"


class RefusedUpstream(ValueError):
    """An upstream a partner may not register; the message says why, safe to show."""


@dataclass(frozen=True)
class UpstreamPolicy:
    """What the operator lets partners register (`[api] upstreams_allow_private`,
    `[api] partner_upstream_hosts`)."""

    allow_private: bool = False
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> UpstreamPolicy:
        patterns = tuple(pattern.lower().rstrip(".") for pattern in settings.partner_upstream_hosts)
        return cls(settings.upstreams_allow_private, patterns)

    def host_listed(self, host: str) -> bool:
        """Whether `host` matches the allow-list (always, when it is empty)."""
        name = host.lower().rstrip(".")
        return not self.hosts or any(fnmatchcase(name, pattern) for pattern in self.hosts)


def upstream_refusal(url: str, policy: UpstreamPolicy) -> str | None:
    """Why a partner may not register `url` (a valid route upstream) by its form, or None."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "is not a valid URL"
    if not host:
        return "must name a host"
    if port is not None and not 1 <= port <= 65535:
        return "port out of range"
    if not host.isascii():
        return "host must be an ASCII DNS name (an international name in its xn-- form)"
    refusal = host_refusal(host, allow_private=policy.allow_private)
    if refusal is not None:
        return refusal
    if not policy.host_listed(host):
        return NOT_ALLOWED
    return None


async def check_upstream(url: str, policy: UpstreamPolicy) -> None:
    """Refuse (`RefusedUpstream`) what `upstream_refusal` refuses, and a name resolving now to
    an address the proxy does not connect to. Unresolved or slow names pass."""
    refusal = upstream_refusal(url, policy)
    if refusal is not None:
        raise RefusedUpstream(refusal)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with trio.fail_after(RESOLVE_SECONDS):
            addresses = await resolve_host(host, port)
    except (Unresolved, trio.TooSlowError):
        return  # not resolvable now: every dial resolves and checks again
    if not all(address_allowed(a, allow_private=policy.allow_private) for a in addresses):
        raise RefusedUpstream(_RESOLVES_PRIVATE)
