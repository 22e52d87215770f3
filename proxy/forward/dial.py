"""Dialling a charger's back-office: TCP, TLS, the WebSocket handshake, and what a failure means.

`Dialer.dial` connects to the route's upstream and completes the handshake, offering the
charger's subprotocols; it returns the stream, the upstream's answer and the bytes it sent right
behind it, or raises a `Refusal`: the back-office's verdict (any HTTP answer other than 101,
passed back), an outage (`upstream_unreachable`, `upstream_timeout`: nothing answered), or our
own limit (`at_capacity`: out of file descriptors).

An upstream that could not be reached is not dialled again for a charger's handshake during the
next `KNOWN_DOWN` seconds (the same refusal comes at once): a crowd of chargers, or of strangers
trying identities, then costs no dial (nor `dial_timeout`) each. Relays' redials (`redial=True`)
go on probing it, paced per host (`backoff.DialPacer`), and the first dial that gets through
clears the mark. Connections are made from `upstream_source_addresses` in turn.

A route with `upstream_public_only` (a charger a partner registered) has its host resolved at
every dial and is refused (502, `upstream_forbidden`, not an outage) when any address is not
public (`proxy.routing.addresses`): so a name changed since registration (DNS rebinding) never
leads inside. When all are public, they are tried in turn (no second lookup that could answer
differently). Other routes connect as `trio.open_tcp_stream` does (happy eyeballs).

Every dial is counted per back-office (`ere_proxy_upstream_dials_total{upstream, outcome}`, the
upstream label being host:port, never credentials) and its time observed whatever the outcome
(`ere_proxy_upstream_dial_seconds{upstream, result}`): `ok`, `refused` (connection refused), `timeout`,
`tls_error`, `dns_error`, `unreachable` (other network errors, a peer gone mid-handshake),
`protocol_error` (no HTTP answer), `http_<status>`, `forbidden`, `at_capacity` (our own file
descriptors). Dials skipped because the upstream is known to be down are not dials. The not-after
time of every certificate a back-office presents is kept per upstream
(`ere_proxy_upstream_certificate_expiry_timestamp_seconds`); one that cannot be read is logged.

A route with `client_cert`/`client_key` presents that certificate to a back-office that requires
mutual TLS (the back-office sees the proxy's certificate, never the charger's); one that cannot be
loaded refuses the charger (502, `tls_error`, logged) without marking the upstream down. A route
with `forward_client_identity` sends the charger identity its client certificate was verified for
in that header (`client_identity`), and no such header otherwise.

Resource handling: a stream that is not returned is closed. Cancellation: as any dial (a
cancelled dial is neither counted nor observed).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Iterator
from functools import lru_cache
from urllib.parse import urlsplit

import trio

from proxy.forward.backoff import DialPacer
from proxy.forward.refusal import Refusal, refused, verdict
from proxy.routing.addresses import address_allowed, resolve_host
from proxy.routing.router import upstream_url
from proxy.runtime.certificates import der_not_after
from proxy.runtime.config import OutboxSettings, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.wire.handshake import (
    UpstreamAccepted,
    UpstreamHandshake,
    UpstreamProtocolError,
    UpstreamRefused,
)

log = logging.getLogger("proxy.server")

_READ = 4096
KNOWN_DOWN = 1.0  # seconds an unreachable upstream is taken as down by new handshakes

Dialled = tuple[trio.abc.Stream, UpstreamAccepted, bytes]
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, what caused it, and the members of exception groups among them (depth-first)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(getattr(current, "exceptions", ()))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def dial_outcome(exc: BaseException, tls_done: bool = False) -> str:
    """The `outcome` label of a dial that failed with `exc` (see the module docstring).

    `tls_done`: the TLS handshake had completed, so an SSL error is a connection cut short (an
    unclean close), not a TLS failure.
    """
    causes = list(_causes(exc))
    if not tls_done and any(isinstance(c, ssl.SSLError) for c in causes):
        return "tls_error"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "dns_error"
    if any(isinstance(c, OSError) and c.errno in _OUT_OF_DESCRIPTORS for c in causes):
        return "at_capacity"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "refused"
    if isinstance(exc, UpstreamProtocolError):
        return "protocol_error"
    return "unreachable"


def http_outcome(answer: UpstreamRefused) -> str:
    """`http_<status>` for an HTTP answer other than 101 (a bounded label: `http_other` outside
    100..599)."""
    return f"http_{answer.status}" if 100 <= answer.status <= 599 else "http_other"


@lru_cache(maxsize=64)
def _client_ssl_context(
    ca_bundle: str | None, client_cert: str | None = None, client_key: str | None = None
) -> ssl.SSLContext:
    """The context of TLS dials (cached per files until `Dialer.reconfigure`).

    Raises OSError or ssl.SSLError when a file cannot be read or the key does not match.
    """
    context = ssl.create_default_context(cafile=ca_bundle)
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context


class Dialer:
    """Dials upstreams for one proxy process; see the module docstring."""

    def __init__(
        self, settings: ProxySettings, redial: OutboxSettings, metrics: ProxyMetrics
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._dials = 0  # picks the next upstream source address
        self.down_until: dict[str, float] = {}  # upstream host:port → dials skipped until then
        self._pacer = DialPacer(redial.redial_rate_per_host, redial.redial_rate_per_host)

    def reconfigure(self, settings: ProxySettings) -> None:
        """New settings for new dials; CA bundles may have been rotated in place."""
        self.settings = settings
        _client_ssl_context.cache_clear()

    async def pace(self, route: Route) -> None:
        """Wait for a relay's turn to redial the route's upstream host."""
        await trio.sleep(
            self._pacer.reserve(urlsplit(route.upstream).hostname or "", trio.current_time())
        )

    def _source_address(self) -> str | None:
        addresses = self.settings.upstream_source_addresses
        if not addresses:
            return None
        self._dials += 1
        return addresses[self._dials % len(addresses)]

    async def _connect(self, route: Route, host: str, port: int) -> trio.SocketStream:
        """A TCP connection to the upstream (see the module docstring for public-only routes)."""
        source = self._source_address()
        if not route.upstream_public_only:
            return await trio.open_tcp_stream(host, port, local_address=source)
        addresses = await resolve_host(host, port)  # Unresolved is an OSError: unreachable
        if not all(address_allowed(a, allow_private=False) for a in addresses):
            raise refused(502, "upstream not allowed", "upstream_forbidden")
        for address in addresses[:-1]:
            try:
                return await trio.open_tcp_stream(address, port, local_address=source)
            except OSError:
                continue
        return await trio.open_tcp_stream(addresses[-1], port, local_address=source)

    async def dial(
        self,
        route: Route,
        identity: str,
        offer: list[str],
        authorization: bytes | None,
        *,
        redial: bool = False,
        client_identity: str | None = None,
        mirror: bool = False,
    ) -> Dialled:
        """Connect and handshake (see the module docstring). Failures are logged as warnings,
        except a relay's redials (debug: the outage is known). `client_identity`: the charger's
        verified identity, for a route's `forward_client_identity` header. `mirror`: a mirror
        back-office's dial, counted as the mirror's (`ere_proxy_mirror_dials_total`), never
        marking its host down for the primaries'."""
        log_failure = log.debug if redial else log.warning
        scheme, host, port, target = upstream_url(route, identity)
        endpoint = f"{host}:{port}"
        count = self._metrics.mirrors.dial if mirror else self._metrics.upstream_dial
        if not redial and trio.current_time() < self.down_until.get(endpoint, float("-inf")):
            raise refused(502, "upstream unreachable", "upstream_unreachable")
        started = trio.current_time()
        context = None
        if scheme == "wss":
            try:
                context = _client_ssl_context(route.ca_bundle, route.client_cert, route.client_key)
            except (OSError, ssl.SSLError) as exc:
                count(endpoint, "tls_error", 0.0)
                log.error(
                    "cannot load the route's TLS files",
                    extra={"identity": identity, "upstream": endpoint, "error": str(exc)},
                )
                raise refused(502, "upstream unreachable", "upstream_unreachable") from None
        extra: list[tuple[bytes, bytes]] = []
        if route.forward_client_identity is not None and client_identity is not None:
            extra.append(
                (route.forward_client_identity.encode(), client_identity.encode())
            )  # Trio's clock: monotonic, and a test's clock in tests
        stream: trio.abc.Stream | None = None
        reached = down = tls_done = False
        outcome: str | None = None
        try:
            with trio.move_on_after(self.settings.dial_timeout):
                stream = await self._connect(route, host, port)
                if context is not None:
                    stream = trio.SSLStream(stream, context, server_hostname=host)
                    await stream.do_handshake()
                    tls_done = True
                    self._peer_certificate(stream, endpoint)
                handshake = UpstreamHandshake(
                    host, port, target, offer, authorization, extra_headers=extra
                )
                await stream.send_all(handshake.request())
                answer = None
                while answer is None:
                    answer = handshake.receive_data(bytes(await stream.receive_some(_READ)))
                reached = True
                if isinstance(answer, UpstreamAccepted):
                    outcome = "ok"
                    dialled, stream = (stream, answer, handshake.trailing_data), None
                    return dialled
                outcome = http_outcome(answer)
                raise verdict(answer)
            down, outcome = True, "timeout"
            raise refused(504, "upstream timed out", "upstream_timeout")
        except Refusal as refusal:
            if outcome is None:  # refused before any connection: a forbidden address
                outcome = "forbidden" if refusal.outcome == "upstream_forbidden" else "unreachable"
            raise
        except OSError as exc:
            outcome = dial_outcome(exc, tls_done)
            if outcome == "at_capacity":  # our own limit, not the upstream's fault
                log.error("out of file descriptors", extra={"identity": identity})
                raise refused(503, "proxy at capacity", "at_capacity") from None
            log_failure("upstream unreachable", extra={"identity": identity, "error": str(exc)})
            down = True
            raise refused(502, "upstream unreachable", "upstream_unreachable") from None
        except (trio.BrokenResourceError, ssl.SSLError, UpstreamProtocolError) as exc:
            outcome = dial_outcome(exc, tls_done)
            log_failure(
                "upstream unreachable",
                extra={"identity": identity, "error": str(exc), "outcome": outcome},
            )
            down = True
            raise refused(502, "upstream unreachable", "upstream_unreachable") from None
        finally:
            if outcome is not None:
                count(endpoint, outcome, trio.current_time() - started)
            if not mirror:  # a mirror's outage says nothing of a primary on its host:port
                if reached:
                    self.down_until.pop(endpoint, None)
                elif down:
                    self.down_until[endpoint] = trio.current_time() + KNOWN_DOWN
            if stream is not None:
                await trio.aclose_forcefully(stream)

    def _peer_certificate(self, stream: trio.SSLStream[trio.SocketStream], endpoint: str) -> None:
        """Keep the not-after time of the certificate the upstream presented (if readable)."""
        try:
            der = stream.getpeercert(binary_form=True)
        except (ValueError, ssl.SSLError):
            der = None
        not_after = der_not_after(der)
        if not_after is None:
            self._metrics.certificate_unreadable("upstream")
            log.warning("upstream certificate unreadable", extra={"upstream": endpoint})
        else:
            self._metrics.upstream_certificate_expiry.labels(endpoint).set(not_after)
