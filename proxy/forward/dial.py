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

Resource handling: a stream that is not returned is closed. Cancellation: as any dial.
"""

from __future__ import annotations

import errno
import logging
import ssl
from functools import lru_cache
from time import perf_counter
from urllib.parse import urlsplit

import trio

from proxy.forward.backoff import DialPacer
from proxy.forward.refusal import refused, verdict
from proxy.routing.addresses import address_allowed, resolve_host
from proxy.routing.router import upstream_url
from proxy.runtime.config import OutboxSettings, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.wire.handshake import UpstreamAccepted, UpstreamHandshake, UpstreamProtocolError

log = logging.getLogger("proxy.server")

_READ = 4096
KNOWN_DOWN = 1.0  # seconds an unreachable upstream is taken as down by new handshakes

Dialled = tuple[trio.abc.Stream, UpstreamAccepted, bytes]


@lru_cache(maxsize=64)
def _client_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle)


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
    ) -> Dialled:
        """Connect and handshake (see the module docstring). Failures are logged as warnings,
        except a relay's redials (debug: the outage is known)."""
        log_failure = log.debug if redial else log.warning
        scheme, host, port, target = upstream_url(route, identity)
        endpoint = f"{host}:{port}"
        if not redial and trio.current_time() < self.down_until.get(endpoint, float("-inf")):
            raise refused(502, "upstream unreachable", "upstream_unreachable")
        started = perf_counter()
        stream: trio.abc.Stream | None = None
        reached = down = False
        try:
            with trio.move_on_after(self.settings.dial_timeout):
                stream = await self._connect(route, host, port)
                if scheme == "wss":
                    stream = trio.SSLStream(
                        stream, _client_ssl_context(route.ca_bundle), server_hostname=host
                    )
                    await stream.do_handshake()
                handshake = UpstreamHandshake(host, port, target, offer, authorization)
                await stream.send_all(handshake.request())
                answer = None
                while answer is None:
                    answer = handshake.receive_data(bytes(await stream.receive_some(_READ)))
                self._metrics.dial_seconds.observe(perf_counter() - started)
                reached = True
                if isinstance(answer, UpstreamAccepted):
                    dialled, stream = (stream, answer, handshake.trailing_data), None
                    return dialled
                raise verdict(answer)
            down = True
            raise refused(504, "upstream timed out", "upstream_timeout")
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # our own limit, not the upstream's fault
                log.error("out of file descriptors", extra={"identity": identity})
                raise refused(503, "proxy at capacity", "at_capacity") from None
            log_failure("upstream unreachable", extra={"identity": identity, "error": str(exc)})
            down = True
            raise refused(502, "upstream unreachable", "upstream_unreachable") from None
        except (trio.BrokenResourceError, ssl.SSLError, UpstreamProtocolError) as exc:
            log_failure("upstream unreachable", extra={"identity": identity, "error": str(exc)})
            down = True
            raise refused(502, "upstream unreachable", "upstream_unreachable") from None
        finally:
            if reached:
                self.down_until.pop(endpoint, None)
            elif down:
                self.down_until[endpoint] = trio.current_time() + KNOWN_DOWN
            if stream is not None:
                await trio.aclose_forcefully(stream)
