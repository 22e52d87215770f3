"""The proxy role: accept chargers, dial their upstream first, then run a `Link` per charger.

Per connection: read the charger's upgrade request (bounded by `handshake_timeout` and
`max_header_size`), route and authenticate it, replace an older link of the same identity,
dial the upstream offering the charger's subprotocols, and only then accept the charger with
the subprotocol the upstream chose. Refusals are answered over HTTP: our own (400/401/404/...),
the upstream's mirrored (401/403/404), or 502/504 when the upstream is unreachable or slow.

Resource handling: every connection's sockets are closed in `finally`. Error handling: a failing
connection is logged and counted; no exception reaches the listener and other links go on.
Shutdown (`shutdown`): stop accepting, let each link finish its in-flight CALLs until the drain
deadline, close every link with 1001, and cancel what is left after the close timeout.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from time import perf_counter
from urllib.parse import urlsplit

import trio

from proxy.routing.password_gate import Check, PasswordGate, Verdict
from proxy.routing.auth import CredentialVerifier, decide_auth
from proxy.forward.backoff import DialPacer, RedialBackoff
from proxy.wire.codec import FrameReader, Message, encode_close
from proxy.runtime.config import Config, ProxySettings, Route
from proxy.wire.handshake import (
    ChargerHandshake,
    ChargerRequest,
    HandshakeRefused,
    UpstreamAccepted,
    UpstreamHandshake,
    UpstreamProtocolError,
    UpstreamRefused,
    upstream_offer,
)
from proxy.capture.journal import Journal
from proxy.forward.link import GOING_AWAY, Link, LinkEnd, Side
from proxy.runtime.metrics import CHARGER_TO_UPSTREAM, UPSTREAM_TO_CHARGER, ProxyMetrics
from proxy.outbox.policy import AuthorizationCache, ChargerOutbox, LiveObserver
from proxy.runtime.logs import LogBudget
from proxy.outbox.store import Lookup, OutboxStore, StoreUnavailable
from proxy.forward.relay import ChargerRefused, Relay, UpstreamUnavailable, close_charger
from proxy.routing.router import Router, upstream_url
from proxy.capture.tracker import Tracker

log = logging.getLogger("proxy.server")

_HANDSHAKE_READ = 4096
_PROTOCOL_ERROR = 1002
_LINGER_BYTES = 1 << 20


class _Refusal(Exception):
    """Internal: answer the charger with this HTTP refusal and count it as `outcome`.

    Never raised inside a nursery of the handshake (it would reach `_serve` in an exception group).
    """

    def __init__(self, refusal: HandshakeRefused, outcome: str) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal
        self.outcome = outcome


def _retry_after(seconds: float) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"retry-after", b"%d" % max(1, math.ceil(seconds))),)


# Dial outcomes that mean an outage (no HTTP answer from the back-office: it could not be reached
# or did not answer in time); with an outbox, a charger that proves its identity is served
# offline instead. Any HTTP answer other than 101 is the back-office's verdict, passed back.
_OUTAGES = frozenset({"upstream_unreachable", "upstream_timeout"})
# A charger refused offline may try again after this many seconds (its own queue holds its CALLs).
_OFFLINE_RETRY_AFTER = 30.0
# Once the upstream accepted a charger, how long its outbox lookup may still take (normally ms).
_LOOKUP_GRACE = 1.0
# An upstream that could not be reached is taken as down for this long by new handshakes.
_KNOWN_DOWN = 1.0


@dataclass
class _Admitted:
    """A charger admitted: its OCPP version, what to send upstream, and the upstream (None: offline).

    `proof` says how its identity was proven (`outbox.PROOFS`): what the outbox records with every
    CALL it queues for this connection.
    """

    version: str
    authorization: bytes | None
    upstream: trio.abc.Stream | None
    trailing: bytes
    needs_outbox: bool = False
    proof: str = "upstream"


_OUTCOMES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "bad_request",
             426: "bad_request", 431: "headers_too_large"}


def server_tls_context(settings: ProxySettings) -> ssl.SSLContext | None:
    """The TLS context of the charger listener (None without a certificate)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def reload_certificates(context: ssl.SSLContext | None, settings: ProxySettings) -> bool:
    """Load the configured certificate and key into the running listener's `context` (SIGHUP).

    Handshakes from then on present the new certificate; connections already up keep theirs.
    A file that cannot be read or does not match is logged and the running certificate kept
    (False). Turning TLS on or off needs a restart: the listener's kind cannot change.
    """
    if context is None or settings.tls_cert is None or settings.tls_key is None:
        if (context is None) != (settings.tls_cert is None):
            log.warning("turning TLS on or off takes effect at the next start")
        return False
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        log.error("certificate reload failed; keeping the running certificate", extra={"error": str(exc)})
        return False
    log.info("certificate reloaded", extra={"certificate": settings.tls_cert})
    return True


def open_listener(
    settings: ProxySettings, reuse_port: bool, tls: ssl.SSLContext | None = None
) -> trio.abc.Listener[trio.abc.Stream]:
    """The charger listener: TCP, wrapped in TLS when a certificate is configured.

    Several processes can share the port with `reuse_port`. `tls`: the context to serve with
    (default: a new one from the settings; pass one to keep it for `reload_certificates`).
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(4096)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    context = tls or server_tls_context(settings)
    if context is None:
        return listener
    return trio.SSLListener(listener, context, https_compatible=False)


def listening_port(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    inner = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    assert isinstance(inner, trio.SocketListener)
    return inner.socket.getsockname()[1]


@lru_cache(maxsize=64)
def _client_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle)


class ProxyServer:
    """Serves chargers on the given listeners until `shutdown` is called."""

    def __init__(
        self,
        config: Config,
        router: Router,
        metrics: ProxyMetrics,
        journal: Journal | None = None,
        outbox: OutboxStore | None = None,
        verifier: CredentialVerifier | None = None,
    ) -> None:
        self.settings = config.proxy
        self._dials = 0  # picks the next upstream source address
        self.journal = journal  # session capture: None forwards without keeping sessions
        self.outbox = outbox  # None: an unreachable upstream refuses the charger (502/504)
        self.router = router
        self.metrics = metrics
        self.links: dict[str, Link | Relay] = {}
        self.accepting = False
        self._draining = False
        self._accept_scope = trio.CancelScope()
        self.stopped = trio.Event()
        self._passwords = PasswordGate()
        # Passthrough chargers: digests of the headers back-offices accepted (offline admission).
        self.verifier = verifier or CredentialVerifier.random()
        self._refusal_log = LogBudget()
        self._down_until: dict[str, float] = {}  # upstream host:port → dials skipped until then
        self._redial_settings = redial = config.outbox
        self._dial_pacer = DialPacer(redial.redial_rate_per_host, redial.redial_rate_per_host)
        self._up_meters = metrics.direction(CHARGER_TO_UPSTREAM)
        self._down_meters = metrics.direction(UPSTREAM_TO_CHARGER)

    def _source_address(self) -> str | None:
        """The next of `upstream_source_addresses` in turn (None: let the system choose)."""
        addresses = self.settings.upstream_source_addresses
        if not addresses:
            return None
        self._dials += 1
        return addresses[self._dials % len(addresses)]

    def reconfigure(self, config: Config) -> None:
        """Take new settings for new connections; running links keep theirs."""
        self.settings = config.proxy
        _client_ssl_context.cache_clear()  # CA bundles may have been rotated in place

    async def run(
        self, listeners: list[trio.abc.Listener[trio.abc.Stream]], *, task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept until `shutdown`; then drain and return when every link is closed."""
        try:
            async with trio.open_nursery() as handlers:
                with self._accept_scope:
                    async with trio.open_nursery() as front:
                        front.start_soon(self._close_idle_links)
                        serve = partial(trio.serve_listeners, self.handle, listeners, handler_nursery=handlers)
                        task_status.started(await front.start(serve))
                        self.accepting = True
                self.accepting = False
                deadline = trio.current_time() + self.settings.drain_timeout
                for link in list(self.links.values()):
                    link.drain(deadline)
                handlers.cancel_scope.deadline = deadline + self.settings.close_timeout
        finally:
            self.accepting = False
            self.stopped.set()

    async def _close_idle_links(self) -> None:
        """Close links through which nothing passed for `idle_timeout` (checked 20 times per period)."""
        while True:
            await trio.sleep(self.settings.idle_timeout / 20)
            cutoff = perf_counter() - self.settings.idle_timeout
            for link in [link for link in self.links.values() if link.last_active < cutoff]:
                link.stop(LinkEnd.IDLE)

    def shutdown(self) -> None:
        """Stop accepting and drain (see the module docstring)."""
        self._draining = True
        self._accept_scope.cancel()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one charger connection from handshake to close; never raises (but Cancelled)."""
        try:
            await self._serve(stream)
        except Exception:
            self.metrics.handshakes.labels("internal_error").inc()
            log.exception("connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        settings = self.settings
        handshake = ChargerHandshake(settings.path_prefix, settings.max_header_size)
        address = _peer_address(stream)
        request = None
        try:
            with trio.move_on_after(settings.handshake_timeout):
                request = await self._read_request(stream, handshake)
            if request is None:
                raise _Refusal(HandshakeRefused(408, "handshake timed out"), "timeout")
            if not upstream_offer(request.offered, settings.default_subprotocol):
                # OCPP-J: complete the handshake without a subprotocol, then close at once.
                self.metrics.handshakes.labels("unsupported_subprotocol").inc()
                close = encode_close(_PROTOCOL_ERROR, "unsupported subprotocol", mask=False)
                await _send_quietly(stream, handshake.accept(None) + close)
                return
            admitted = await self._admit(request, address)
        except _Refusal as refusal:
            self._refused(refusal, request.identity if request is not None else None, address)
            await _send_quietly(stream, handshake.refuse(refusal.refusal))
            return
        # A charger that offered no subprotocol must not be sent one (we offered the default for it).
        chosen = admitted.version if admitted.version in request.offered else None
        try:
            await self._run_link(request, admitted, stream, handshake, chosen)
        finally:
            if admitted.upstream is not None:
                await trio.aclose_forcefully(admitted.upstream)

    def _refused(self, refusal: _Refusal, identity: str | None, address: str) -> None:
        """Count a refusal and log it on one line (identity, client address, reason; no secrets).

        Anyone can cause these, so the lines are rate-limited (`LogBudget`); each logged line
        says how many were left out before it.
        """
        self.metrics.handshakes.labels(refusal.outcome).inc()
        if self._refusal_log.allow(trio.current_time()):
            log.info("handshake refused", extra={
                "identity": identity, "client": address, "status": refusal.refusal.status,
                "reason": refusal.refusal.reason, "outcome": refusal.outcome,
                "suppressed": self._refusal_log.suppressed(),
            })  # fmt: skip

    async def _read_request(self, stream: trio.abc.Stream, handshake: ChargerHandshake) -> ChargerRequest:
        while True:
            try:
                data = await stream.receive_some(_HANDSHAKE_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise _Refusal(HandshakeRefused(400, "connection failed"), "charger_gone") from exc
            try:
                request = handshake.receive_data(bytes(data))
            except HandshakeRefused as refusal:
                outcome = "charger_gone" if not data else _OUTCOMES.get(refusal.status, "bad_request")
                raise _Refusal(refusal, outcome) from None
            if request is not None:
                return request

    async def _admit(self, request: ChargerRequest, address: str) -> _Admitted:
        """Route, authenticate, dial upstream (and with an outbox, look the charger up meanwhile).

        Without an outbox an unreachable upstream refuses the charger. With one, the charger is
        admitted offline (a relay answers it) when the upstream cannot be reached and the charger
        proves its identity locally (`_offline_proof`), or when the upstream accepts it and it
        still has an outbox to honour. Any HTTP answer of the upstream other than 101 refuses it.
        """
        if self._draining:
            raise _Refusal(HandshakeRefused(503, "shutting down", _retry_after(5)), "shutting_down")
        identity = request.identity
        route = self.router.lookup(identity)
        if route is None:
            raise _Refusal(HandshakeRefused(404, "unknown charger"), "not_found")
        auth = decide_auth(route, identity, request.authorization)
        if auth.status is None and auth.password_to_verify is not None:
            assert route.password_hash is not None
            await self._check_password(identity, auth.password_to_verify, route.password_hash, address)
        if auth.status is not None:
            raise _Refusal(HandshakeRefused(401, "unauthorized", _CHALLENGE), "unauthorized")
        offer = upstream_offer(request.offered, self.settings.default_subprotocol)
        authorization = auth.upstream_authorization
        store = self.outbox
        if store is None:
            stream, accepted, trailing = await self._dial(route, identity, offer, authorization)
            return _Admitted(accepted.subprotocol or self.settings.default_subprotocol, authorization, stream,
                             trailing)
        lookup: Lookup | None = None
        dialled: tuple[trio.abc.Stream, UpstreamAccepted, bytes] | None = None
        refused: _Refusal | None = None

        looked_up = trio.Event()

        async def look_up() -> None:
            nonlocal lookup
            try:
                lookup = await store.look_up(identity)
            except StoreUnavailable as exc:
                log.warning("outbox lookup failed", extra={"identity": identity, "error": str(exc)})
            looked_up.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(look_up)
                try:
                    dialled = await self._dial(route, identity, offer, authorization)
                except _Refusal as refusal:  # kept, and raised outside the nursery
                    refused = refusal
                else:
                    # The upstream accepted: a slow or stalled database must not hold the charger
                    # up. Without an answer in time it is forwarded (an outbox it may still have
                    # waits for its next relay, and is never lost).
                    with trio.move_on_after(_LOOKUP_GRACE):
                        await looked_up.wait()
                    nursery.cancel_scope.cancel()
        except BaseException:
            if dialled is not None:
                await trio.aclose_forcefully(dialled[0])
            raise
        if refused is not None:
            if refused.outcome not in _OUTAGES:
                raise refused
            proof = self._offline_proof(route, request, lookup)
            log.info("upstream unreachable: admitting offline", extra={"identity": identity, "proof": proof})
            return _Admitted(offer[0], authorization, None, b"", needs_outbox=True, proof=proof)
        assert dialled is not None
        stream, accepted, trailing = dialled
        if route.auth == "passthrough" and request.authorization:
            # The back-office accepted this header: what proves the charger while it is unreachable.
            stored = lookup.verifier if lookup is not None else None
            if not self.verifier.current(identity, request.authorization, stored):
                store.remember_verifier(identity, self.verifier.digest(identity, request.authorization))
        version = accepted.subprotocol or self.settings.default_subprotocol
        needs_outbox = lookup is not None and lookup.needs_outbox
        return _Admitted(version, authorization, stream, trailing, needs_outbox=needs_outbox)

    def _offline_proof(self, route: Route, request: ChargerRequest, lookup: Lookup | None) -> str:
        """How a charger proves its identity while its upstream is unreachable, or a refusal.

        `managed`: its password (checked already). `passthrough`: the Authorization header whose
        digest was stored when the back-office last accepted it. Without proof the charger is
        refused (503 with Retry-After): its own offline queue keeps its CALLs meanwhile.
        """
        if route.auth == "managed":
            return "password"
        if lookup is None:
            raise _Refusal(HandshakeRefused(503, "proxy queue unavailable", _retry_after(_OFFLINE_RETRY_AFTER)),
                           "store_unavailable")
        if not self.verifier.matches(request.identity, request.authorization, lookup.verifier):
            raise _Refusal(HandshakeRefused(503, "back-office unreachable", _retry_after(_OFFLINE_RETRY_AFTER)),
                           "offline_unproven")
        return "verifier"

    async def _check_password(self, identity: str, password: str, encoded: str, address: str) -> None:
        """Raise the refusal for a managed charger's password unless it is right (see `admission`)."""
        check = None
        with trio.move_on_after(self.settings.handshake_timeout):
            check = await self._passwords.check(identity, password, encoded, address)
        if check is None:  # queued behind a flood of logins for the whole handshake timeout
            check = Check(Verdict.BUSY, self.settings.handshake_timeout)
        self.metrics.password_checks.labels(check.verdict.value, "yes" if check.hashed else "no").inc()
        if check.verdict is Verdict.WRONG:
            raise _Refusal(HandshakeRefused(401, "unauthorized", _CHALLENGE), "unauthorized")
        if check.verdict is Verdict.RATE_LIMITED:
            raise _Refusal(HandshakeRefused(429, "too many failed attempts", _retry_after(check.retry_after)),
                           "rate_limited")
        if check.verdict is Verdict.BUSY:
            raise _Refusal(HandshakeRefused(503, "busy, retry later", _retry_after(check.retry_after)), "busy")

    async def _dial(
        self, route: Route, identity: str, offer: list[str], authorization: bytes | None, *, redial: bool = False
    ) -> tuple[trio.abc.Stream, UpstreamAccepted, bytes]:
        """Connect and handshake with the upstream; any refusal or failure raises _Refusal.

        Failures are logged as warnings, except a relay's redials (debug: the outage is known).
        An upstream that could not be reached is not dialled again for a charger's handshake
        during the next `_KNOWN_DOWN` seconds (the same refusal comes at once): a crowd of
        chargers, or of strangers trying identities, then costs no dial each. Relays' redials
        (paced apart) go on probing it, and the first dial that gets through clears the mark.
        """
        log_failure = log.debug if redial else log.warning
        scheme, host, port, target = upstream_url(route, identity)
        endpoint = f"{host}:{port}"
        if not redial and trio.current_time() < self._down_until.get(endpoint, -math.inf):
            raise _Refusal(HandshakeRefused(502, "upstream unreachable"), "upstream_unreachable")
        started = perf_counter()
        stream: trio.abc.Stream | None = None
        reached = down = False
        try:
            with trio.move_on_after(self.settings.dial_timeout):
                stream = await trio.open_tcp_stream(host, port, local_address=self._source_address())
                if scheme == "wss":
                    stream = trio.SSLStream(stream, _client_ssl_context(route.ca_bundle), server_hostname=host)
                    await stream.do_handshake()
                handshake = UpstreamHandshake(host, port, target, offer, authorization)
                await stream.send_all(handshake.request())
                answer = None
                while answer is None:
                    answer = handshake.receive_data(bytes(await stream.receive_some(_HANDSHAKE_READ)))
                self.metrics.dial_seconds.observe(perf_counter() - started)
                reached = True
                if isinstance(answer, UpstreamAccepted):
                    accepted, stream = (stream, answer, handshake.trailing_data), None
                    return accepted
                raise _verdict(answer)
            down = True
            raise _Refusal(HandshakeRefused(504, "upstream timed out"), "upstream_timeout")
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # our own limit, not the upstream's fault
                log.error("out of file descriptors", extra={"identity": identity})
                raise _Refusal(HandshakeRefused(503, "proxy at capacity"), "at_capacity") from None
            log_failure("upstream unreachable", extra={"identity": identity, "error": str(exc)})
            down = True
            raise _Refusal(HandshakeRefused(502, "upstream unreachable"), "upstream_unreachable") from None
        except (trio.BrokenResourceError, ssl.SSLError, UpstreamProtocolError) as exc:
            log_failure("upstream unreachable", extra={"identity": identity, "error": str(exc)})
            down = True
            raise _Refusal(HandshakeRefused(502, "upstream unreachable"), "upstream_unreachable") from None
        finally:
            if reached:
                self._down_until.pop(endpoint, None)
            elif down:
                self._down_until[endpoint] = trio.current_time() + _KNOWN_DOWN
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _run_link(
        self, request: ChargerRequest, admitted: _Admitted, charger_stream: trio.abc.Stream,
        handshake: ChargerHandshake, subprotocol: str | None,
    ) -> None:
        """Register the link (replacing an older one), send the charger its 101, and serve it.

        A connection is served by a forwarding `Link`, and with an outbox by a `Relay` while the
        upstream is unreachable or the charger's outbox is replayed; they take turns on the same
        sockets (UPSTREAM_LOST starts a relay, HANDBACK a link).
        """
        max_size = self.settings.max_message_size
        charger = Side("charger", charger_stream, FrameReader(from_client=True, max_message_size=max_size),
                       self._up_meters, mask=False)
        identity = request.identity
        tracker = Tracker(identity, admitted.version) if self.journal is not None else None
        leg: Link | Relay
        if admitted.upstream is not None and not admitted.needs_outbox:
            leg = self._link(identity, admitted, charger, self._upstream_side(admitted.upstream), tracker,
                             handshake.trailing_data, admitted.trailing)
            admitted.upstream = None  # the link owns it now
        else:
            first = (admitted.upstream, admitted.trailing) if admitted.upstream is not None else None
            relay = await self._relay(identity, admitted, charger, tracker, handshake.trailing_data, upstream=first)
            refusal = None
            if relay is None:
                refusal = HandshakeRefused(503, "proxy queue unavailable"), "store_unavailable"
            elif admitted.upstream is None and relay.outbox.at_bound:
                refusal = HandshakeRefused(503, "proxy queue full"), "outbox_full"
            if refusal is not None:
                self.metrics.handshakes.labels(refusal[1]).inc()
                await _send_quietly(charger_stream, handshake.refuse(refusal[0]))
                return
            assert relay is not None
            leg, admitted.upstream = relay, None  # the relay owns the upstream now
        # Only now, with the upstream's consent (or the outbox's), may a new connection replace a
        # running link: a refused or failed attempt must not disconnect the charger really there.
        old = self.links.get(identity)
        if old is not None:
            old.stop(LinkEnd.REPLACED)
        self.links[identity] = leg
        served = [leg]  # the leg serving the connection now (updated by _serve_legs)
        try:
            try:
                await charger_stream.send_all(handshake.accept(subprotocol))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.metrics.handshakes.labels("charger_gone").inc()
                leg.finished.set()
                upstream = leg.upstream
                if upstream is not None:
                    await trio.aclose_forcefully(upstream.stream)
                return
            self.metrics.handshakes.labels("accepted" if isinstance(leg, Link) else "accepted_offline").inc()
            self.metrics.connected.inc()
            log.info("link up", extra={"identity": identity, "offline": isinstance(leg, Relay)})
            try:
                end = await self._serve_legs(identity, admitted, charger, tracker, served)
            finally:
                self.metrics.connected.dec()
        finally:
            if self.links.get(identity) is served[0]:
                del self.links[identity]
        self.metrics.link_ends.labels(end.value).inc()
        log.info("link down", extra={"identity": identity, "reason": end.value})

    async def _serve_legs(
        self, identity: str, admitted: _Admitted, charger: Side, tracker: Tracker | None, served: list[Link | Relay]
    ) -> LinkEnd:
        """Run links and relays in turn until the connection ends; returns how it ended.

        One `RedialBackoff` paces the redials of every relay of the connection, so a back-office
        that accepts and drops at once is not redialled through the turns of links and relays.
        """
        first = served[0]
        redial = self._redial_settings
        backoff = first.backoff if isinstance(first, Relay) else RedialBackoff(redial.redial_min, redial.redial_max)
        while True:
            leg = served[0]
            if self._draining:
                leg.drain(trio.current_time() + self.settings.drain_timeout)
            started = trio.current_time()
            end = await leg.run()
            if end not in (LinkEnd.UPSTREAM_LOST, LinkEnd.HANDBACK):
                return end
            self.metrics.link_ends.labels(end.value).inc()
            if self.links.get(identity) is not leg:  # replaced meanwhile: this connection is done
                if isinstance(leg, Relay) and leg.upstream is not None:
                    await trio.aclose_forcefully(leg.upstream.stream)
                await close_charger(charger, GOING_AWAY, "replaced by a new connection", self.settings.close_timeout)
                return LinkEnd.REPLACED
            if isinstance(leg, Link):
                log.info("upstream lost: serving offline", extra={"identity": identity})
                now = trio.current_time()
                backoff.connection_lost(now, now - started)
                relay = await self._relay(identity, admitted, charger, tracker, leg.charger_leftover, carried=leg.carried,
                                          learned=leg.observer, backoff=backoff)
                if relay is None:
                    await close_charger(charger, GOING_AWAY, "proxy queue unavailable", self.settings.close_timeout)
                    return LinkEnd.STORE_UNAVAILABLE
                served[0] = relay
            else:
                assert leg.upstream is not None
                log.info("outbox replayed: forwarding", extra={"identity": identity})
                served[0] = self._link(identity, admitted, charger, leg.upstream, tracker,
                                       leg.charger_leftover, leg.upstream_leftover)
            self.links[identity] = served[0]

    def _link(
        self, identity: str, admitted: _Admitted, charger: Side, upstream: Side, tracker: Tracker | None,
        charger_trailing: bytes, upstream_trailing: bytes,
    ) -> Link:
        journal, store = self.journal, self.outbox
        observer = learned = None
        if store is not None:
            observer = LiveObserver(admitted.version, AuthorizationCache(), {})
            learned = partial(store.remember, identity)
        return Link(
            identity, charger, upstream, self.settings.close_timeout, charger_trailing, upstream_trailing,
            tracker=tracker, submit=journal.submit if journal is not None else None,
            keep_charger=store is not None, observer=observer, learned=learned,
        )  # fmt: skip

    async def _relay(
        self, identity: str, admitted: _Admitted, charger: Side, tracker: Tracker | None, charger_trailing: bytes,
        carried: Sequence[Message] = (), learned: LiveObserver | None = None,
        upstream: tuple[trio.abc.Stream, bytes] | None = None, backoff: RedialBackoff | None = None,
    ) -> Relay | None:
        """Claim the charger's outbox and build its relay (None: the store is unavailable).

        `learned`: what the forwarding link saw, newer than what the store may hold yet;
        `upstream`: a connected upstream (and its trailing bytes) to start with.
        """
        store = self.outbox
        assert store is not None
        try:
            epoch, outbox = await store.claim(identity, admitted.version)
        except StoreUnavailable as exc:
            log.warning("outbox unavailable", extra={"identity": identity, "error": str(exc)})
            return None
        if learned is not None:
            outbox.auth.known.update(learned.auth.known)
            outbox.starts.update(learned.starts)
        outbox.proof = admitted.proof
        journal = self.journal
        return Relay(
            identity, charger, outbox, epoch, store, partial(self._redial, identity, admitted),
            self._upstream_side, self.metrics.outbox, self.settings.close_timeout,
            charger_trailing=charger_trailing, carried=carried, upstream=upstream, tracker=tracker,
            submit=journal.submit if journal is not None else None, backoff=backoff,
        )  # fmt: skip

    async def _redial(self, identity: str, admitted: _Admitted) -> tuple[trio.abc.Stream, bytes]:
        """Dial the charger's upstream again, offering the subprotocol the charger speaks.

        Dials to one upstream host are paced for the whole process (`backoff.DialPacer`). A
        refusal of the charger (401, 403, 404) raises `ChargerRefused`; any other failure
        `UpstreamUnavailable`.
        """
        route = self.router.lookup(identity)
        if route is None or self._draining:
            raise UpstreamUnavailable("no route")
        await trio.sleep(self._dial_pacer.reserve(urlsplit(route.upstream).hostname or "", trio.current_time()))
        try:
            stream, accepted, trailing = await self._dial(
                route, identity, [admitted.version], admitted.authorization, redial=True)
        except _Refusal as refusal:
            if refusal.refusal.status in (401, 403, 404) and refusal.outcome == "upstream_refused":
                raise ChargerRefused(refusal.refusal.status) from None
            raise UpstreamUnavailable(refusal.outcome) from None
        if (accepted.subprotocol or self.settings.default_subprotocol) != admitted.version:
            await trio.aclose_forcefully(stream)
            raise UpstreamUnavailable("upstream chose another subprotocol")
        return stream, trailing

    def _upstream_side(self, stream: trio.abc.Stream) -> Side:
        reader = FrameReader(from_client=False, max_message_size=self.settings.max_message_size)
        return Side("upstream", stream, reader, self._down_meters, mask=True)

    def relays(self) -> list[tuple[str, ChargerOutbox]]:
        """(upstream host, outbox) of every connection served by a relay now (for metrics)."""
        result = []
        for identity, leg in list(self.links.items()):
            if isinstance(leg, Relay):
                route = self.router.lookup(identity)
                result.append((_host_port(route.upstream) if route else "", leg.outbox))
        return result


_CHALLENGE = ((b"www-authenticate", b'Basic realm="ocpp"'),)


def _verdict(answer: UpstreamRefused) -> _Refusal:
    """The back-office's HTTP answer (other than 101), passed back to the charger.

    4xx and 5xx go back as they came, with the headers that tell the charger what to do
    (WWW-Authenticate, Retry-After); anything else (a redirect, a 200) is no WebSocket answer: 502.
    """
    headers = tuple((name, value) for name, value in ((b"www-authenticate", answer.www_authenticate),
                                                      (b"retry-after", answer.retry_after)) if value)
    if 400 <= answer.status < 500:
        return _Refusal(HandshakeRefused(answer.status, "refused by upstream", headers), "upstream_refused")
    if 500 <= answer.status < 600:
        return _Refusal(HandshakeRefused(answer.status, "upstream failed", headers), "upstream_error")
    return _Refusal(HandshakeRefused(502, f"upstream answered {answer.status}"), "upstream_error")


def _host_port(url: str) -> str:
    """host:port of a URL, without any user info (a metric label must never carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"[{host}]:{parts.port}" if ":" in host and parts.port else f"{host}:{parts.port}" if parts.port else host


def _peer_address(stream: trio.abc.Stream) -> str:
    """The client's IP address ("" when it cannot be told): for logs and failure budgets."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    try:
        if isinstance(inner, trio.SocketStream):
            return str(inner.socket.getpeername()[0])
    except OSError:
        pass
    return ""


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    """Best-effort write of a final answer, then a lingering close.

    Closing a socket with unread input makes the kernel reset the connection, which can destroy
    the answer before the peer reads it; so we half-close and drain what the peer still sends
    for at most a second (and at most _LINGER_BYTES) before the caller closes the socket.
    """
    if not data:
        return
    with trio.move_on_after(1):
        try:
            await stream.send_all(data)
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            drained = 0
            while drained < _LINGER_BYTES and (chunk := await stream.receive_some(_HANDSHAKE_READ)):
                drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
