"""The partner API's rate limits, as the authentication of a request applies them.

Two sets of token buckets (`proxy.api.rate_limit`), from `ApiSettings`: requests per partner
key (an access token's requests count against its key), and failed authentications per client
address (`Throttle.address`: the connection's, or behind `forwarded_for_hops` proxies the one
they put in X-Forwarded-For; an IPv6 address counts by its /64, the network one subscriber is
given, so a client cannot take a fresh allowance from each of its 2^64 addresses, and an
IPv4-mapped address as the IPv4 address). The counts live in the process: n API processes
allow n times the limits.

`Throttle.check_address` refuses an address whose failures are spent, before its credentials
are looked at, so guesses past the limit are never checked; `failed` counts a failure against
the address and against the key the credentials named, if any; `admit` counts a request
against its key, and `charge` a request that costs more than one (a MID scan of many
chargers) the rest of its cost. A refusal is a 429 `Problem` with `Retry-After` (whole
seconds, at least 1); a key's refusal carries `RateLimit-Limit` and `RateLimit-Remaining` too,
and `RateLimitHeaders` adds those two to every answer of a request `admit` let through.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.problems import Problem
from proxy.api.rate_limit import Limit, TokenBuckets, Verdict
from proxy.runtime.config import ApiSettings

__all__ = ["RateLimitHeaders", "Throttle", "ThrottleCounts"]

_RATE_LIMITED = "urn:ere-proxy:problem:rate-limited"
# Where `admit` leaves its verdict for `RateLimitHeaders` (the request's state).
_STATE_KEY = "rate_limit"
# An address longer than this is not one (and would cost memory as a bucket's name).
_MAX_ADDRESS = 64


@dataclass
class ThrottleCounts:
    """What a throttle refused and counted since it was made (read by `proxy.api.metrics`)."""

    refused_key: int = 0
    refused_address: int = 0
    failed_authentications: int = 0


class Throttle:
    """The process's request and failure counts (see the module docstring)."""

    def __init__(self, settings: ApiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = TokenBuckets(
            Limit(settings.rate_limit_per_second, settings.rate_limit_burst), clock
        )
        self.failures = TokenBuckets(
            Limit(settings.failed_auth_per_second, settings.failed_auth_burst), clock
        )
        self._hops = settings.forwarded_for_hops
        self.counts = ThrottleCounts()

    def address(self, connection: HTTPConnection) -> str:
        """The client's address as failures count it: the connection's, or the one the
        trusted proxies in front name in X-Forwarded-For (the `forwarded_for_hops`-th from the
        right), if they do; an IPv6 address as its /64 (see the module docstring)."""
        peer = connection.client.host if connection.client is not None else "unknown"
        if self._hops == 0:
            return _network(peer)
        named = [
            part.strip()
            for header in connection.headers.getlist("x-forwarded-for")
            for part in header.split(",")
        ]
        if len(named) < self._hops or not 0 < len(named[-self._hops]) <= _MAX_ADDRESS:
            return _network(peer)
        return _network(named[-self._hops])

    def check_address(self, address: str) -> None:
        """429 if `address` has no failed authentication left; counts nothing."""
        verdict = self.failures.peek(address)
        if not verdict.allowed:
            self.counts.refused_address += 1
            raise Problem(
                429,
                "too many failed authentications from this address; "
                f"retry after {verdict.retry_after} s",
                type_=_RATE_LIMITED,
                headers={"Retry-After": str(verdict.retry_after)},
            )

    def failed(self, address: str, key_id: str | None) -> None:
        """Count a failed authentication against `address` and the key it named, if any."""
        self.counts.failed_authentications += 1
        self.failures.take(address)
        if key_id is not None:
            self.requests.take(key_id)

    def admit(self, connection: HTTPConnection, key_id: str) -> Verdict:
        """Count a request against `key_id`; 429 over its limit. The verdict is kept for the
        answer's RateLimit headers."""
        verdict = self.requests.take(key_id)
        if not verdict.allowed:
            self.counts.refused_key += 1
            raise _key_refusal(verdict, "too many requests for this key")
        connection.state.rate_limit = verdict  # read by RateLimitHeaders as _STATE_KEY
        return verdict

    def charge(self, connection: HTTPConnection, key_id: str, extra: int) -> None:
        """Count `extra` requests more against `key_id` for a request `admit` let through
        that costs more than one (in all never more than half a burst, so any request can be
        made, two at once); 429 if the key has not that many left, taking none."""
        extra = min(extra, self.requests.limit.burst // 2 - 1)
        if extra < 1:
            return
        verdict = self.requests.take(key_id, extra)
        if not verdict.allowed:
            self.counts.refused_key += 1
            raise _key_refusal(verdict, f"this request costs {extra + 1} of the key's requests")
        connection.state.rate_limit = verdict


def _key_refusal(verdict: Verdict, detail: str) -> Problem:
    return Problem(
        429,
        f"{detail}; retry after {verdict.retry_after} s",
        type_=_RATE_LIMITED,
        headers={"Retry-After": str(verdict.retry_after)} | _rate_headers(verdict),
    )


def _network(address: str) -> str:
    """What failures count against for `address`: an IPv6 address's /64, an IPv4-mapped
    one's IPv4 address, anything else as it is."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _rate_headers(verdict: Verdict) -> dict[str, str]:
    return {"RateLimit-Limit": str(verdict.limit), "RateLimit-Remaining": str(verdict.remaining)}


class RateLimitHeaders:
    """ASGI middleware: the key's `RateLimit-Limit` and `RateLimit-Remaining` on the answer of
    every request `Throttle.admit` let through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            verdict = state.get(_STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(verdict, Verdict):
                headers = [(name.lower(), value) for name, value in message.get("headers", [])]
                have = {name for name, _ in headers}
                for name, value in _rate_headers(verdict).items():
                    if name.lower().encode() not in have:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
