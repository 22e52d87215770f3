"""The proxy role's server: accept chargers, admit them, then serve each connection to its end.

Per connection: read the charger's upgrade request (bounded by `handshake_timeout` and
`max_header_size`), admit it (`admission.Admission`: route, credentials, the dial of its
back-office, or offline with proof), replace an older link of the same identity, and only then
accept the charger with the subprotocol the upstream chose. The connection is served by a
forwarding `Link`, and with an outbox by a `Relay` while the upstream is unreachable or the
charger's outbox is replayed; they take turns on the same sockets (UPSTREAM_LOST starts a relay,
HANDBACK a link). With the outbox, a link takes its charger over in PostgreSQL once it is up
(`OutboxStore.own`, or the relay's claim), and every `takeover_check_interval` the server asks
which of its links have been taken over since by a newer link on another node or worker (the
charger came back elsewhere while its old connection here still looked open) and closes them
with 1001: while the database answers, a charger is not served by two nodes at once for longer
than that. Refusals are answered over HTTP (`refusal.Refusal`), counted by outcome and
logged on one line each, rate-limited; a failed TLS handshake is counted as `tls_error`, or as
`client_cert_invalid` when the charger's client certificate failed verification (expired, another
CA, revoked; the connection is closed without an HTTP answer, before routing).

Resource handling: every connection's sockets are closed in `finally`. Error handling: a failing
connection is logged and counted; no exception reaches the listener and other links go on.
Shutdown (`shutdown`): stop accepting, let each link finish its in-flight CALLs until the drain
deadline, close every link with 1001, and cancel what is left after the close timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from urllib.parse import urlsplit

import trio

from proxy.capture.capture import Capture
from proxy.capture.journal import Journal
from proxy.capture.tracker import Tracker
from proxy.forward.admission import Admission, Admitted
from proxy.forward.backoff import RedialBackoff
from proxy.forward.dial import Dialer
from proxy.forward.engine import ForwardingEngine
from proxy.forward.link import Link, OutboxWatch
from proxy.forward.listener import (
    TlsFailed,
    client_certificate,
    peer_address,
    send_quietly,
    tls_handshake,
)
from proxy.forward.mirror import MirrorRedials, mirrored
from proxy.forward.policy import LinkEnd
from proxy.forward.refusal import REQUEST_OUTCOMES, Refusal, refused
from proxy.forward.relay import ChargerRefused, Relay, UpstreamUnavailable
from proxy.forward.side import Side, close_side
from proxy.outbox.learned import AuthorizationCache, LiveObserver
from proxy.outbox.policy import ChargerOutbox
from proxy.outbox.store import OutboxStore, StoreUnavailable
from proxy.routing.auth import CredentialVerifier
from proxy.routing.router import Router
from proxy.runtime.config import Config
from proxy.runtime.logs import LogBudget
from proxy.runtime.metrics import CHARGER_TO_UPSTREAM, UPSTREAM_TO_CHARGER, ProxyMetrics
from proxy.wire.codec import FrameReader, Message, encode_close
from proxy.wire.handshake import ChargerHandshake, ChargerRequest, HandshakeRefused, upstream_offer
from proxy.wire.ocpp import CloseCode

log = logging.getLogger("proxy.server")

_HANDSHAKE_READ = 4096
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ProxyServer:
    """Serves chargers on the given listeners until `shutdown` is called.

    `journal`: session capture (None: forward without keeping sessions); `outbox`: the outbox
    store (None: an unreachable upstream refuses the charger); `verifier`: the key of the
    passthrough credential verifiers (default: one of this process).
    """

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
        self.journal = journal
        self.outbox = outbox
        self.router = router
        self.metrics = metrics
        self.dialer = Dialer(config.proxy, config.outbox, metrics)
        self.admission = Admission(config.proxy, router, self.dialer, metrics, outbox, verifier)
        self.links: dict[str, Link | Relay] = {}
        self._owners: dict[str, _Ownership] = {}  # identity -> the claim of its connection here
        self.accepting = False
        self._draining = False
        self._accept_scope = trio.CancelScope()
        self.stopped = trio.Event()
        self._refusal_log = LogBudget()
        self._redial_settings = config.outbox
        self.mirror_redials = MirrorRedials(config.outbox)
        self._up_meters = metrics.direction(CHARGER_TO_UPSTREAM)
        self._down_meters = metrics.direction(UPSTREAM_TO_CHARGER)
        self.engine = (
            ForwardingEngine((self._up_meters, self._down_meters))
            if config.proxy.engine == "native"
            else None
        )

    def reconfigure(self, config: Config) -> None:
        """Take new settings for new connections; running links keep theirs."""
        self.settings = self.admission.settings = config.proxy
        self.dialer.reconfigure(config.proxy)

    async def run(
        self,
        listeners: list[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until `shutdown`; then drain and return when every link is closed."""
        try:
            async with trio.open_nursery() as engine_nursery:
                if self.engine is not None:  # outlives every link: they come back through it
                    await engine_nursery.start(self.engine.run)
                await self._serve_listeners(listeners, task_status)
                engine_nursery.cancel_scope.cancel()
        finally:
            self.accepting = False
            self.stopped.set()

    async def _serve_listeners(
        self,
        listeners: list[trio.abc.Listener[trio.abc.Stream]],
        task_status: trio.TaskStatus[list[trio.abc.Listener[trio.abc.Stream]]],
    ) -> None:
        async with trio.open_nursery() as handlers:
            with self._accept_scope:
                async with trio.open_nursery() as front:
                    front.start_soon(self._close_idle_links)
                    if self.outbox is not None:
                        front.start_soon(self._close_taken_over_links, self.outbox)
                    for listener in listeners:
                        front.start_soon(self._accept, listener, handlers)
                    task_status.started(listeners)
                    self.accepting = True
            self.accepting = False
            deadline = trio.current_time() + self.settings.drain_timeout
            for link in list(self.links.values()):
                link.drain(deadline)
            handlers.cancel_scope.deadline = deadline + self.settings.close_timeout

    async def _accept(
        self, listener: trio.abc.Listener[trio.abc.Stream], handlers: trio.Nursery
    ) -> None:
        """Accept on `listener` until cancelled (then close it); `handle` serves each connection.

        Trio's `serve_listeners` without its task around each handler (`handle` closes its
        stream itself): a frame and a task name less per connected charger. A shortage of
        descriptors is the listener's to wait out (`AcceptGuard`).
        """
        async with listener:
            while True:
                stream = await listener.accept()
                handlers.start_soon(self.handle, stream, name=_CONNECTION_TASK)

    async def _close_idle_links(self) -> None:
        """Close links through which nothing passed for `idle_timeout` (checked 20 times per period)."""
        while True:
            await trio.sleep(self.settings.idle_timeout / 20)
            cutoff = perf_counter() - self.settings.idle_timeout
            for link in [link for link in self.links.values() if link.last_active < cutoff]:
                link.stop(LinkEnd.IDLE)

    async def _close_taken_over_links(self, store: OutboxStore) -> None:
        """Close links whose charger a newer link elsewhere has taken over (see the module doc).

        A link whose claim is under way, or changed while the database was asked, is left for
        the next round: the newer epoch may be its own. The first look compares every held
        charger; later ones read only the takeovers since the one before (`superseded`), until a
        round finds nothing held.
        """
        since = None
        while True:
            await trio.sleep(self._redial_settings.takeover_check_interval)
            held = {
                identity: (own, own.epoch, own.changes)
                for identity, own in self._owners.items()
                if own.epoch and not own.pending
            }
            if not held:
                since = None  # what is held next is compared in full again
                continue
            try:
                taken, since = await store.superseded({i: h[1] for i, h in held.items()}, since)
            except StoreUnavailable:
                continue  # the claims stay; asked again next round, from the same look
            for identity in taken:
                own, _, changes = held[identity]
                turn = own.served[0]
                if (
                    self._owners.get(identity) is own
                    and own.changes == changes
                    and not own.pending
                    and self.links.get(identity) is turn
                ):
                    log.info("taken over by a link on another node", extra={"identity": identity})
                    turn.stop(LinkEnd.REPLACED)

    async def _take_over(self, identity: str, own: _Ownership) -> None:
        """Take the charger over for this connection's forwarding link (`OutboxStore.own`)."""
        assert self.outbox is not None
        own.pending += 1
        try:
            own.record(await self.outbox.own(identity))
        except StoreUnavailable as exc:
            log.warning("takeover not recorded", extra={"identity": identity, "error": str(exc)})
        finally:
            own.pending -= 1
            if own.taking_over is not None:
                own.taking_over.set()  # for whoever waits on it already
                own.taking_over = None

    def shutdown(self) -> None:
        """Stop accepting and drain (see the module docstring)."""
        self._draining = self.admission.draining = True
        self._accept_scope.cancel()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one charger connection from handshake to close; never raises (but Cancelled).

        Admit the charger (`_handshake`), make its first turn (`_first_turn`), register it
        (replacing an older connection of the same identity), send the charger its 101 and serve
        it. The link is served in this function's own frame, the functions before it have
        returned, and the handshake's objects are let go: memory per connected charger.
        """
        admitted: Admitted | None = None
        capture: Capture | None = None
        try:
            accepted = await self._handshake(stream)
            if accepted is None:
                return
            request, admitted, handshake, chosen = accepted
            identity = request.identity
            charger = Side(
                "charger",
                stream,
                FrameReader(from_client=True, max_message_size=self.settings.max_message_size),
                self._up_meters,
                mask=False,
                trailing=handshake.trailing_data,
            )
            if self.journal:
                capture = Capture(Tracker(identity, admitted.version), self.journal.submit)
                self.metrics.trackers.add(capture.tracker)  # read at scrape time
            turn = await self._first_turn(identity, admitted, charger, capture, handshake)
            if turn is None:
                return
            answer = handshake.accept(chosen)
            del accepted, request, handshake  # not kept while the connection lasts
            # Only now, with the upstream's consent (or the outbox's), may a new connection
            # replace a running link: a refused or failed attempt must not disconnect the
            # charger really there.
            old = self.links.get(identity)
            if old is not None:
                old.stop(LinkEnd.REPLACED)
            self.links[identity] = turn
            served = [turn]  # the turn serving the connection now (updated by _serve_turns)
            own = self._owners[identity] = _Ownership(served)
            if isinstance(turn, Relay):  # a relay has claimed already
                own.record(turn.epoch)
            elif self.outbox is not None:
                own.taking_over = trio.Event()
            try:
                try:
                    await stream.send_all(answer)
                except _STREAM_ERRORS:
                    self.metrics.handshakes.labels("charger_gone").inc()
                    if turn.upstream is not None:
                        await trio.aclose_forcefully(turn.upstream.stream)
                    return
                del answer
                self.metrics.handshakes.labels(
                    "accepted" if isinstance(turn, Link) else "accepted_offline"
                ).inc()
                self.metrics.connected.inc()
                log.info(
                    "link up", extra={"identity": identity, "offline": isinstance(turn, Relay)}
                )
                try:
                    route = self.router.lookup(identity)
                    if route is None or not route.mirrors:  # no context to keep: a lighter link
                        end = await self._serve_turns(identity, admitted, charger, capture, served)
                    else:
                        async with mirrored(
                            identity,
                            admitted.version,
                            route.mirrors,
                            self.dialer,
                            self.mirror_redials,
                            self.metrics.mirrors,
                            charger,
                        ):
                            end = await self._serve_turns(
                                identity, admitted, charger, capture, served
                            )
                finally:
                    self.metrics.connected.dec()
            finally:
                if self.links.get(identity) is served[0]:
                    del self.links[identity]
                if self._owners.get(identity) is own:
                    del self._owners[identity]
            self.metrics.link_ends.labels(end.value).inc()
            log.info("link down", extra={"identity": identity, "reason": end.value})
        except Exception:
            self.metrics.handshakes.labels("internal_error").inc()
            log.exception("connection failed")
        finally:
            if capture is not None:
                self.metrics.trackers.ended(capture.tracker)
            if admitted is not None and admitted.upstream is not None:  # no turn took it over
                await trio.aclose_forcefully(admitted.upstream)
            await trio.aclose_forcefully(stream)

    async def _handshake(
        self, stream: trio.abc.Stream
    ) -> tuple[ChargerRequest, Admitted, ChargerHandshake, str | None] | None:
        """Read the charger's request and admit it: the request, how it was admitted, the
        handshake (to answer it) and the subprotocol to accept; None: refused and answered."""
        settings = self.settings
        handshake = ChargerHandshake(settings.path_prefix, settings.max_header_size)
        address = peer_address(stream)
        request = None
        try:
            with trio.move_on_after(settings.handshake_timeout):
                request = await self._read_request(stream, handshake)
            if request is None:
                raise refused(408, "handshake timed out", "timeout")
            if not upstream_offer(request.offered, settings.default_subprotocol):
                # OCPP-J: complete the handshake without a subprotocol, then close at once.
                self.metrics.handshakes.labels("unsupported_subprotocol").inc()
                close = encode_close(
                    CloseCode.PROTOCOL_ERROR, "unsupported subprotocol", mask=False
                )
                await send_quietly(stream, handshake.accept(None) + close)
                return None
            admitted = await self.admission.admit(request, address, client_certificate(stream))
        except Refusal as refusal:
            self._refused(refusal, request.identity if request is not None else None, address)
            await send_quietly(stream, handshake.refuse(refusal.refusal))
            return None
        # A charger that offered no subprotocol must not be sent one (we offered the default for it).
        chosen = admitted.version if admitted.version in request.offered else None
        return request, admitted, handshake, chosen

    def _refused(self, refusal: Refusal, identity: str | None, address: str) -> None:
        """Count a refusal and log it on one line (identity, client address, reason; no secrets).

        Anyone can cause these, so the lines are rate-limited (`LogBudget`); each logged line
        says how many were left out before it.
        """
        self.metrics.handshakes.labels(refusal.outcome).inc()
        if self._refusal_log.allow(trio.current_time()):
            log.info(
                "handshake refused",
                extra={
                    "identity": identity,
                    "client": address,
                    "status": refusal.refusal.status,
                    "reason": refusal.refusal.reason,
                    "outcome": refusal.outcome,
                    "suppressed": self._refusal_log.suppressed(),
                },
            )

    async def _read_request(
        self, stream: trio.abc.Stream, handshake: ChargerHandshake
    ) -> ChargerRequest:
        try:
            if not await tls_handshake(stream):
                raise refused(400, "connection closed", "charger_gone")
        except TlsFailed as failed:
            outcome = "client_cert_invalid" if failed.client_certificate else "tls_error"
            raise refused(400, f"TLS handshake failed: {failed}", outcome) from None
        while True:
            try:
                data = await stream.receive_some(_HANDSHAKE_READ)
            except _STREAM_ERRORS as exc:
                raise refused(400, "connection failed", "charger_gone") from exc
            try:
                request = handshake.receive_data(bytes(data))
            except HandshakeRefused as refusal:
                outcome = (
                    "charger_gone"
                    if not data
                    else REQUEST_OUTCOMES.get(refusal.status, "bad_request")
                )
                raise Refusal(refusal, outcome) from None
            if request is not None:
                return request

    async def _first_turn(
        self,
        identity: str,
        admitted: Admitted,
        charger: Side,
        capture: Capture | None,
        handshake: ChargerHandshake,
    ) -> Link | Relay | None:
        """The link (or, with the upstream unreachable or an outbox to replay first, the relay)
        that serves the connection first; None: refused for want of the outbox (answered)."""
        if admitted.upstream is not None and not admitted.needs_outbox:
            upstream = self._upstream_side(admitted.upstream, admitted.trailing)
            link = self._link(identity, admitted, charger, upstream, capture)
            admitted.upstream = None  # the link owns it now
            return link
        first = (
            self._upstream_side(admitted.upstream, admitted.trailing) if admitted.upstream else None
        )
        relay = await self._relay(identity, admitted, charger, capture, upstream=first)
        refusal = None
        if relay is None:
            refusal = HandshakeRefused(503, "proxy queue unavailable"), "store_unavailable"
        elif admitted.upstream is None and relay.outbox.at_bound:
            refusal = HandshakeRefused(503, "proxy queue full"), "outbox_full"
        if refusal is not None:
            self.metrics.handshakes.labels(refusal[1]).inc()
            await send_quietly(charger.stream, handshake.refuse(refusal[0]))
            return None
        admitted.upstream = None  # the relay owns it now
        return relay

    def _serve_turns(
        self,
        identity: str,
        admitted: Admitted,
        charger: Side,
        capture: Capture | None,
        served: list[Link | Relay],
    ) -> Awaitable[LinkEnd]:
        """Run links and relays in turn until the connection ends; awaited, says how it ended.

        One `RedialBackoff` paces the redials of every relay of the connection, so a back-office
        that accepts and drops at once is not redialled through the turns of links and relays.
        What is awaited is `_turns` itself when there is nothing to take over, so a connection
        keeps no frame of this function while it lasts (memory per idle charger).
        """
        first = served[0]
        backoff = first.backoff if isinstance(first, Relay) else None  # else made when needed
        own = self._owners.get(identity)
        own = own if own is not None and own.served is served else None
        if own is None or own.taking_over is None:  # nothing to take over: no task, no checkpoint
            return self._turns(identity, admitted, charger, capture, served, backoff, own)
        turns = self._turns(identity, admitted, charger, capture, served, backoff, own)
        return self._taking_over(identity, own, turns)

    async def _taking_over(
        self, identity: str, own: _Ownership, turns: Awaitable[LinkEnd]
    ) -> LinkEnd:
        """`turns` awaited beside the takeover of the charger in PostgreSQL (`_take_over`)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._take_over, identity, own)
            end = await turns
            nursery.cancel_scope.cancel()
        return end

    async def _turns(
        self,
        identity: str,
        admitted: Admitted,
        charger: Side,
        capture: Capture | None,
        served: list[Link | Relay],
        backoff: RedialBackoff | None,
        own: _Ownership | None,
    ) -> LinkEnd:
        """The turns of `_serve_turns`: links and relays until the connection ends."""
        going_away = CloseCode.GOING_AWAY
        while True:
            turn = served[0]
            if self._draining:
                turn.drain(trio.current_time() + self.settings.drain_timeout)
            started = trio.current_time()
            end = await turn.run()
            if end not in (LinkEnd.UPSTREAM_LOST, LinkEnd.HANDBACK):
                return end
            self.metrics.link_ends.labels(end.value).inc()
            if self.links.get(identity) is not turn:  # replaced meanwhile: this connection is done
                if isinstance(turn, Relay) and turn.upstream is not None:
                    await trio.aclose_forcefully(turn.upstream.stream)
                await close_side(
                    charger,
                    (going_away, "replaced by a new connection"),
                    self.settings.close_timeout,
                )
                return LinkEnd.REPLACED
            if isinstance(turn, Link):
                log.info("upstream lost: serving offline", extra={"identity": identity})
                now = trio.current_time()
                if backoff is None:  # made at the first loss: an idle charger keeps none
                    redial = self._redial_settings
                    backoff = RedialBackoff(redial.redial_min, redial.redial_max)
                backoff.connection_lost(now, now - started)
                seen = turn.outbox.observer if turn.outbox is not None else None
                if own is not None:  # the link's takeover first, so the relay's claim is newer
                    if own.taking_over is not None:
                        await own.taking_over.wait()
                    own.pending += 1
                try:
                    relay = await self._relay(
                        identity,
                        admitted,
                        charger,
                        capture,
                        carried=turn.carried,
                        seen=seen,
                        backoff=backoff,
                    )
                finally:
                    if own is not None:
                        own.pending -= 1
                if relay is None:
                    await close_side(
                        charger,
                        (going_away, "proxy queue unavailable"),
                        self.settings.close_timeout,
                    )
                    return LinkEnd.STORE_UNAVAILABLE
                served[0] = relay
                if own is not None:
                    own.record(relay.epoch)
            else:
                assert turn.upstream is not None
                log.info("outbox replayed: forwarding", extra={"identity": identity})
                served[0] = self._link(identity, admitted, charger, turn.upstream, capture)
            self.links[identity] = served[0]

    def _link(
        self,
        identity: str,
        admitted: Admitted,
        charger: Side,
        upstream: Side,
        capture: Capture | None,
    ) -> Link:
        store = self.outbox
        watch = None
        if store is not None:
            observer = LiveObserver(admitted.version, AuthorizationCache(), {})
            watch = OutboxWatch(observer, partial(store.remember, identity))
        return Link(
            identity,
            charger,
            upstream,
            self.settings.close_timeout,
            capture=capture,
            outbox=watch,
            engine=self.engine,
        )

    async def _relay(
        self,
        identity: str,
        admitted: Admitted,
        charger: Side,
        capture: Capture | None,
        *,
        carried: Sequence[Message] = (),
        seen: LiveObserver | None = None,
        upstream: Side | None = None,
        backoff: RedialBackoff | None = None,
    ) -> Relay | None:
        """Claim the charger's outbox and build its relay (None: the store is unavailable).

        `seen`: what the forwarding link learned, newer than what the store may hold yet;
        `upstream`: a connected upstream to start with.
        """
        store = self.outbox
        assert store is not None
        try:
            claim = await store.claim(identity, admitted.version)
        except StoreUnavailable as exc:
            log.warning("outbox unavailable", extra={"identity": identity, "error": str(exc)})
            return None
        outbox = claim.outbox
        if seen is not None:
            outbox.auth.known.update(seen.auth.known)
            outbox.starts.update(seen.starts)
        outbox.proof = admitted.proof
        return Relay(
            identity,
            charger,
            claim,
            partial(self._redial, identity, admitted),
            self.metrics.outbox,
            self.settings.close_timeout,
            carried=carried,
            upstream=upstream,
            capture=capture,
            backoff=backoff,
        )

    async def _redial(self, identity: str, admitted: Admitted) -> Side:
        """Dial the charger's upstream again, offering the subprotocol the charger speaks.

        Dials to one upstream host are paced for the whole process. A refusal of the charger
        (401, 403, 404) raises `ChargerRefused`; any other failure `UpstreamUnavailable`.
        """
        route = self.router.lookup(identity)
        if route is None or self._draining:
            raise UpstreamUnavailable("no route")
        await self.dialer.pace(route)
        try:
            stream, accepted, trailing = await self.dialer.dial(
                route,
                identity,
                [admitted.version],
                admitted.authorization,
                redial=True,
                client_identity=admitted.client_identity,
            )
        except Refusal as refusal:
            if refusal.refusal.status in (401, 403, 404) and refusal.outcome == "upstream_refused":
                raise ChargerRefused(refusal.refusal.status) from None
            raise UpstreamUnavailable(refusal.outcome) from None
        if (accepted.subprotocol or self.settings.default_subprotocol) != admitted.version:
            await trio.aclose_forcefully(stream)
            raise UpstreamUnavailable("upstream chose another subprotocol")
        return self._upstream_side(stream, trailing)

    def _upstream_side(self, stream: trio.abc.Stream, trailing: bytes) -> Side:
        reader = FrameReader(from_client=False, max_message_size=self.settings.max_message_size)
        return Side("upstream", stream, reader, self._down_meters, mask=True, trailing=trailing)

    def relays(self) -> list[tuple[str, ChargerOutbox]]:
        """(upstream host, outbox) of every connection served by a relay now (for metrics)."""
        result = []
        for identity, turn in list(self.links.items()):
            if isinstance(turn, Relay):
                route = self.router.lookup(identity)
                result.append((_host_port(route.upstream) if route else "", turn.outbox))
        return result


_CONNECTION_TASK = "charger connection"  # one name for every connection's task, not one each


@dataclass(eq=False, slots=True)
class _Ownership:
    """A connection's takeover of its charger in PostgreSQL: the epoch it holds (0: none yet),
    its claims under way, and how often its epoch changed (a check that raced a claim of its
    own is not acted on). `taking_over`: set when the forwarding link's takeover is done; None
    once it is, or when none is needed (an idle charger keeps no Event)."""

    served: list[Link | Relay]
    epoch: int = 0
    pending: int = 0
    changes: int = 0
    taking_over: trio.Event | None = None

    def record(self, epoch: int) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self.changes += 1


def _host_port(url: str) -> str:
    """host:port of a URL, without any user info (a metric label must never carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return (
        f"[{host}]:{parts.port}"
        if ":" in host and parts.port
        else f"{host}:{parts.port}"
        if parts.port
        else host
    )
