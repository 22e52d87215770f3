"""A charger served through its outbox: offline answers, replay, and relaying with id rewrites.

A `Relay` takes over a charger's connection when its upstream is unreachable (at the handshake,
or when a forwarding `Link` loses its upstream) or when the charger still has an outbox to replay
or offline transactions whose ids need mapping. It works message by message, not byte by byte:

- offline (no upstream): each charger CALL is answered by the outbox policy (`outbox.policy`),
  after its entry is stored (the claim's `OutboxWriter.write`) with the capture events the CALL
  and its answer gave; a relay submits again the events of the entries it claimed, before it
  replays anything, so those of a worker killed before its journal stored them are not lost
  (the capture store keeps each event id once); pings are answered here; answers the charger sends to
  a lost upstream's CALLs are dropped and counted, and so are OCPP 2.1 messages that expect no
  answer (SEND, CALLRESULTERROR). Meanwhile the upstream is redialled with
  exponential back-off and jitter.
- replay (upstream back, outbox not empty): the entries go upstream in order, one CALL at a
  time, each deleted from the store before the next is sent; new charger CALLs keep being
  answered here and queue behind. The upstream's CALLs reach the charger (ids mapped back).
  A charger that leaves during the replay does not stop it: the rest goes upstream first.
- live (outbox empty): charger CALLs and upstream answers are relayed; 1.6 provisional ids are
  rewritten until their transactions end. When nothing needs rewriting any more and both readers
  are between messages (checked after each message either way), `run` returns `HANDBACK` so
  the caller can go back to byte forwarding; bytes read as the relay ended are in
  each side's `trailing` for the link that takes over.

Ending: a charger close, EOF or protocol error ends the relay like a link; a full outbox or a
failed store closes the charger with 1001 (its own offline queue takes over); a newer link that
claimed the outbox (`Fenced`) ends it as REPLACED; a redial the back-office refuses (401, 403,
404) closes the charger with 1008. An upstream close the back-office meant (a code in
`policy.DELIBERATE_CLOSE_CODES`, or 4000 and up) is passed to the charger; any other loss of the
upstream is an outage (`policy.is_outage`). Cancellation (`stop`) closes both sides with 1001,
after the CALL being answered (at most `close_timeout`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from time import perf_counter, time

import msgspec
import trio

from proxy.capture.capture import Capture, decode_events, encode_events
from proxy.capture.events import TransactionIdAssigned
from proxy.capture.tracker import event_id
from proxy.forward.backoff import RedialBackoff
from proxy.forward.policy import STOP_REASONS, LinkEnd, can_hand_back, is_outage
from proxy.forward.side import Side, close_side
from proxy.outbox.entries import Completed, DeadLetter, Full, ReplayOutcome, Retry
from proxy.outbox.frames import call_frame, payload_of
from proxy.outbox.learned import LiveObserver
from proxy.outbox.store import Claim, Fenced, StoreUnavailable, Write
from proxy.runtime.metrics import OutboxMeters
from proxy.wire.codec import (
    CALL,
    CALLERROR,
    CALLRESULT,
    CALLRESULTERROR,
    CLOSE,
    PING,
    PONG,
    SEND,
    TEXT,
    Message,
    ProtocolError,
    encode_close,
    encode_frame,
    text_message,
)
from proxy.wire.ocpp import CloseCode

log = logging.getLogger("proxy.relay")

_STREAM_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    trio.BusyResourceError,
)

# dials the upstream again: its side, with what it sent behind its 101
Connector = Callable[[], Awaitable[Side]]
GOING_AWAY, POLICY_VIOLATION, INTERNAL = (
    CloseCode.GOING_AWAY,
    CloseCode.POLICY_VIOLATION,
    CloseCode.INTERNAL_ERROR,
)


class UpstreamUnavailable(Exception):
    """Dialling the upstream failed (unreachable, timed out, or an answer other than a refusal)."""


class ChargerRefused(Exception):
    """The back-office refused this charger (401, 403, 404) when redialled: the relay ends."""


class _UpstreamLost(Exception):
    pass


class _End(Exception):
    def __init__(self, end: LinkEnd, codes: dict[str, tuple[int, str]]) -> None:
        self.end, self.codes = end, codes


class Relay:
    """See the module docstring.

    `claim`: the charger's outbox, claimed (its store and epoch); `connect`: redials the upstream;
    `upstream`: a connected upstream to start with (or None); `carried`: charger messages a
    forwarding link read but may not have delivered; `capture`: session capture (or None);
    `backoff`: shared by every relay of one charger connection (a lost upstream is redialled with
    back-off across their turns); `clock`: the wall clock (seconds since the epoch) that stamps
    entries and events and times retries (redials follow Trio's clock).
    """

    def __init__(
        self,
        identity: str,
        charger: Side,
        claim: Claim,
        connect: Connector,
        meters: OutboxMeters,
        close_timeout: float,
        *,
        carried: Sequence[Message] = (),
        upstream: Side | None = None,
        capture: Capture | None = None,
        backoff: RedialBackoff | None = None,
        clock: Callable[[], float] = time,
    ) -> None:
        self.identity = identity
        self._clock = clock
        self.charger = charger
        self.outbox = outbox = claim.outbox
        self.settings = outbox.settings
        self._epoch = claim.epoch
        self._store = claim.store
        self._connect = connect
        self._meters = meters
        self._close_timeout = close_timeout
        self._carried = list(carried)
        self._first_upstream = upstream
        self.backoff = backoff or RedialBackoff(
            outbox.settings.redial_min, outbox.settings.redial_max
        )
        self._capture = capture
        if capture is not None:
            # The events of entries an earlier link queued, submitted again before anything is
            # replayed (and renamed): the capture store keeps each event id once, and a worker
            # killed before its journal stored them loses nothing.
            for entry in outbox.entries:
                if entry.captured is not None:
                    capture.submit(decode_events(entry.captured))
                    entry.captured = None
        self.observer = LiveObserver(outbox.version, outbox.auth, outbox.starts)
        self.upstream: Side | None = None
        self._offline_counted = False
        self._connection = trio.CancelScope()  # the current upstream connection's tasks
        self._upstream_busy = False  # the upstream reader is between feeding and handling
        self._charger_busy = False  # the charger loop is between feeding and handling
        # Bytes read after the relay decided to end (a read that completed as it was cancelled)
        # are never handled here: they are left in the side's `trailing` for the link that takes over.
        self._charger_lock = trio.Lock()
        self._upstream_lock = trio.Lock()
        self._live_call: Message | None = None  # charger CALL relayed live, not yet answered
        self._replay_answer: Message | None = None
        self._replay_answered = trio.Event()
        self._queued = trio.Event()  # the charger added to the outbox
        self._progress = trio.Event()  # the replay settled an entry, or the upstream was lost
        self._rewrites_seen = outbox.rewrites
        self._scope = trio.CancelScope()
        self._end: _End | None = None
        self._charger_left: _End | None = None  # the charger went away while the replay went on
        self.last_active = perf_counter()
        self.finished = trio.Event()

    @property
    def epoch(self) -> int:
        """The epoch of the claim this relay writes under."""
        return self._epoch

    # -- control from outside ----------------------------------------------------------------
    def stop(self, end: LinkEnd) -> None:
        """End now (REPLACED, IDLE, SHUTDOWN); both sides get 1001."""
        self._finish(_End(end, _both(GOING_AWAY, STOP_REASONS.get(end, "going away"))))

    def drain(self, deadline: float) -> None:
        """On shutdown: end at once (every CALL the charger sent has been answered or relayed)."""
        self.stop(LinkEnd.SHUTDOWN)

    def _finish(self, end: _End) -> None:
        if self._end is None:
            self._end = end
        self._scope.cancel()

    def _set_upstream(self, upstream: Side | None) -> None:
        self.upstream = upstream
        offline = upstream is None
        if offline != self._offline_counted:
            self._meters.offline.inc(1 if offline else -1)
            self._offline_counted = offline

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> LinkEnd:
        """Serve until the link ends, or until it can go back to byte forwarding (HANDBACK)."""
        self._set_upstream(None)
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guarded, self._upstream_loop)
                    nursery.start_soon(self._guarded, self._charger_loop)
        finally:
            if self._end is None:
                self._end = _End(LinkEnd.INTERNAL_ERROR, _both(INTERNAL, "internal error"))
            if self._end.end is not LinkEnd.HANDBACK:
                await self._close_sides()
            self._set_upstream(self.upstream)  # keeps the gauge right for a HANDBACK
            if self._offline_counted:
                self._meters.offline.dec()
                self._offline_counted = False
            self.finished.set()
        return self._end.end

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run a task of the relay; whatever ends it ends the relay (no exception groups escape)."""
        try:
            await task()
        except _End as end:
            if end.end in _CHARGER_LEFT and self.upstream is not None and not self._live():
                self._charger_left = end  # finish the replay first; `_replay` ends the relay
                self.charger.gone = True
                await trio.aclose_forcefully(self.charger.stream)
                return
            self._finish(end)
        except (Fenced, StoreUnavailable) as exc:
            self._finish(_as_end(exc))
        except Exception:
            log.exception("relay failed", extra={"identity": self.identity})
            self._finish(_End(LinkEnd.INTERNAL_ERROR, _both(INTERNAL, "internal error")))

    async def _charger_loop(self) -> None:
        charger = self.charger
        for message in self._carried:  # what a forwarding link read but could not deliver
            await self._from_charger(message)
        self._carried.clear()
        data, charger.trailing = charger.trailing, b""
        while True:
            if not data:
                data = await self._receive_charger()
                if self._end is not None:
                    charger.trailing = data
                    return
            self.last_active = perf_counter()
            self._charger_busy = True
            try:
                messages = charger.reader.feed(data)
            except ProtocolError as exc:
                charger.broke_protocol = True
                charger.meters.codec_error(exc.close_code)
                raise _End(
                    LinkEnd.CHARGER_PROTOCOL_ERROR,
                    {
                        "charger": (exc.close_code, exc.reason),
                        "upstream": (INTERNAL, "peer protocol error"),
                    },
                ) from None
            data = b""
            if charger.copies is not None:
                charger.copies(messages)
            for message in messages:
                charger.meters.count(message.opcode, message.message_type, message.action)
                await self._from_charger(message)
            self._charger_busy = False
            if self._can_hand_back():
                raise _End(LinkEnd.HANDBACK, {})

    async def _receive_charger(self) -> bytes:
        charger = self.charger
        while True:
            try:
                data = await charger.transport.receive()
            except _STREAM_ERRORS:
                charger.gone = True
                raise _End(
                    LinkEnd.CHARGER_ERROR, {"upstream": (INTERNAL, "peer connection failed")}
                ) from None
            if not data:
                charger.gone = True
                raise _End(LinkEnd.CHARGER_EOF, {"upstream": (GOING_AWAY, "peer went away")})
            return data

    def _can_hand_back(self) -> bool:
        upstream = self.upstream
        return can_hand_back(
            upstream_connected=upstream is not None,
            outbox_settled=self._live(),
            call_open=self._live_call is not None,
            handling=self._upstream_busy or self._charger_busy,
            needs_rewriting=self.outbox.needs_rewriting,
            between_messages=upstream is not None
            and self.charger.reader.at_message_boundary
            and upstream.reader.at_message_boundary,
        )

    async def _from_charger(self, message: Message) -> None:
        if message.opcode == CLOSE:
            reply = (
                encode_close(message.close_code, message.close_reason or "", mask=False)
                if message.close_code is not None
                else encode_close(mask=False)
            )
            await self._send_charger(reply)
            raise _End(
                LinkEnd.CLOSED,
                {"upstream": (message.close_code or 1000, message.close_reason or "")},
            )
        if message.opcode == PING:
            await self._send_charger(encode_frame(PONG, message.data, mask=False))
            return
        if message.opcode != TEXT:
            return  # pongs and binary messages mean nothing to a back-office we stand in for
        kind = message.message_type
        if kind == CALL:
            if self._live():
                try:
                    await self._relay_live_call(message)
                except _UpstreamLost:
                    pass  # the upstream loop answers it offline (it is `_live_call`)
            else:
                await self._answer_shielded(message)
        elif kind in (CALLRESULT, CALLERROR):
            if self.upstream is None:
                self._meters.dropped_answers.inc()  # its CALL came over a connection that is gone
                return
            self._track_charger(message)
            try:
                await self._send_upstream(encode_frame(TEXT, message.data, mask=True))
            except _UpstreamLost:
                self._meters.dropped_answers.inc()
        elif kind in (SEND, CALLRESULTERROR):  # OCPP 2.1: nothing answers them
            if not self._live():
                self._meters.dropped_unanswered.inc()  # nothing waits for them: not queued
                return
            self._track_charger(message)
            try:
                await self._send_upstream(encode_frame(TEXT, message.data, mask=True))
            except _UpstreamLost:
                self._meters.dropped_unanswered.inc()

    def _live(self) -> bool:
        return self.upstream is not None and self.outbox.empty and self.outbox.in_flight is None

    async def _answer_shielded(self, message: Message) -> None:
        """Answer offline even while being stopped; a store slower than `call_timeout` counts as down."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.settings.call_timeout) as waited:
                await self._answer_offline(message)
        if waited.cancelled_caught:
            raise StoreUnavailable("outbox write timed out")

    async def _answer_offline(self, message: Message) -> None:
        outbox = self.outbox
        while True:
            decision = outbox.offline_call(
                message.unique_id or "", message.action or "", payload_of(message), self._clock()
            )
            if not isinstance(decision, Full) or self.upstream is None:
                break
            # Replaying: room is being made; the charger waits for its answer meanwhile.
            self._progress = trio.Event()
            await self._progress.wait()
        if isinstance(decision, Full):
            self._meters.full.inc()
            log.warning(
                "outbox full: closing the charger",
                extra={"identity": self.identity, "reason": decision.reason},
            )
            raise _End(
                LinkEnd.OUTBOX_FULL,
                {
                    "charger": (GOING_AWAY, "proxy queue full"),
                    "upstream": (GOING_AWAY, "going away"),
                },
            )
        # Captured before the entry is stored, and stored with it: a worker killed before its
        # journal wrote the events loses none (the next claim submits them again). They are
        # submitted once the entry is stored, ahead of anything captured meanwhile (a replay's
        # rename of the transaction they name, say).
        capture = self._capture
        held = (
            capture.hold(
                capture.answered_offline(
                    self._charger_view(message, outbox.upstream_view(message)),
                    text_message(decision.frame),
                    self._clock(),
                )
            )
            if capture is not None
            else None
        )
        stored = False
        try:
            if decision.entry is not None:
                decision.entry.captured = encode_events(held.events) if held is not None else None
                await self._store.write(
                    Write(
                        self.identity,
                        self._epoch,
                        append=[decision.entry],
                        transactions=[decision.transaction] if decision.transaction else [],
                        next_seq=outbox.next_seq,
                    )
                )
                decision.entry.captured = None  # in the database; submitted below
                self._meters.queued.inc()
                self._queued.set()
            stored = True
        finally:
            if capture is not None and held is not None:
                capture.release(held, submit=stored)
        self._meters.offline_answer(message.action)
        await self._send_charger(encode_frame(TEXT, decision.frame, mask=False))

    async def _relay_live_call(self, message: Message) -> None:
        rewritten, ended = self.outbox.from_charger(message)
        self._count_rewrites()
        frame = (
            message.data
            if rewritten is None
            else call_frame(message.unique_id or "", message.action or "", rewritten)
        )
        self._live_call = message
        self.observer.on_call(message)
        self._track_charger(message, rewritten)
        await self._send_upstream(encode_frame(TEXT, frame, mask=True))
        if ended is not None:
            await self._store.write(Write(self.identity, self._epoch, transactions=[ended]))

    # -- the upstream ------------------------------------------------------------------------
    async def _upstream_loop(self) -> None:
        """Dial and serve upstream connections until the relay ends, pacing every redial.

        The back-off (`backoff.RedialBackoff`) follows failed dials and lost connections alike,
        so a back-office that accepts and drops at once is not redialled in a loop. A back-office
        that refuses the charger (401, 403, 404) ends the relay: the charger is closed (1008) and
        hears the verdict at its next handshake.
        """
        first = self._first_upstream
        self._first_upstream = None
        while True:
            if first is not None:
                upstream, first = first, None
            else:
                await trio.sleep_until(self.backoff.next_dial_at)
                try:
                    upstream = await self._connect()
                except UpstreamUnavailable:
                    self.backoff.dial_failed(trio.current_time())
                    continue
                except ChargerRefused:
                    log.warning(
                        "back-office refused the charger: closing it",
                        extra={"identity": self.identity},
                    )
                    raise _End(
                        LinkEnd.UPSTREAM_REFUSED,
                        {"charger": (POLICY_VIOLATION, "refused by the back-office")},
                    ) from None
            connected_at = trio.current_time()
            handed_back = False
            try:
                await self._serve_upstream(upstream)
            finally:
                handed_back = self._end is not None and self._end.end is LinkEnd.HANDBACK
                if not handed_back:
                    self._set_upstream(None)
                    self._progress.set()
                    self.outbox.connection_lost()
                    with trio.CancelScope(shield=True):
                        await close_side(upstream, (GOING_AWAY, "going away"), self._close_timeout)
            if handed_back:
                return
            if self._charger_left is not None:
                self._finish(self._charger_left)
                return
            log.info("upstream lost: answering offline", extra={"identity": self.identity})
            now = trio.current_time()
            self.backoff.connection_lost(now, now - connected_at)
            lost, self._live_call = self._live_call, None
            if lost is not None:  # relayed but never answered: it may not have arrived
                await self._answer_shielded(lost)

    async def _serve_upstream(self, upstream: Side) -> None:
        """Replay and relay over one upstream connection; returns when it is lost."""
        self._set_upstream(upstream)
        log.info(
            "upstream connected",
            extra={"identity": self.identity, "queued": len(self.outbox.entries)},
        )
        with trio.CancelScope() as self._connection:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_lost, self._replay)
                nursery.start_soon(self._until_lost, partial(self._read_upstream, upstream))

    async def _until_lost(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except _UpstreamLost:
            pass
        except (_End, Fenced, StoreUnavailable) as exc:
            self._finish(_as_end(exc))
        self._connection.cancel()

    async def _read_upstream(self, upstream: Side) -> None:
        data, upstream.trailing = upstream.trailing, b""
        while True:
            if data:
                try:
                    messages = upstream.reader.feed(data)
                except ProtocolError as exc:
                    upstream.broke_protocol = True
                    upstream.meters.codec_error(exc.close_code)
                    raise _UpstreamLost from None
                self._upstream_busy = True
                for message in messages:
                    upstream.meters.count(message.opcode, message.message_type, message.action)
                    await self._from_upstream(message)
                self._upstream_busy = False
                if self._can_hand_back():  # e.g. the answer to the last live CALL just passed
                    raise _End(LinkEnd.HANDBACK, {})
            try:
                data = await upstream.transport.receive()
            except _STREAM_ERRORS:
                upstream.gone = True
                raise _UpstreamLost from None
            if self._end is not None:
                upstream.trailing = data
                return
            if not data:
                upstream.gone = True
                raise _UpstreamLost

    async def _from_upstream(self, message: Message) -> None:
        if message.opcode == CLOSE:
            code = message.close_code
            if not is_outage(code):  # the back-office ended this charger's link
                reason = message.close_reason or ""
                raise _End(
                    LinkEnd.CLOSED,
                    {"charger": (code or 1000, reason), "upstream": (code or 1000, reason)},
                )
            await self._send_upstream(
                encode_close(code, mask=True) if code is not None else encode_close(mask=True)
            )
            raise _UpstreamLost
        if message.opcode == PING:
            await self._send_upstream(encode_frame(PONG, message.data, mask=True))
            return
        if message.opcode != TEXT:
            return
        kind = message.message_type
        outbox = self.outbox
        if kind in (CALLRESULT, CALLERROR):
            if outbox.in_flight is not None and message.unique_id == outbox.in_flight_id:
                self._replay_answer = message
                self._replay_answered.set()
                return
            live = self._live_call
            if live is not None and message.unique_id == live.unique_id:
                self._live_call = None
                if learned := self.observer.on_answer(message):
                    self._store.remember(self.identity, learned)
            self._track_upstream(message)
            await self._send_charger(encode_frame(TEXT, message.data, mask=False))
            return
        # A CALL of the back-office: to the charger, with real ids mapped back to provisional ones.
        frame = message.data
        if (rewritten := outbox.from_upstream(message)) is not None:
            frame = call_frame(message.unique_id or "", message.action or "", rewritten)
            self._count_rewrites()
        self._track_upstream(message)
        await self._send_charger(encode_frame(TEXT, frame, mask=False))

    async def _replay(self) -> None:
        """Send the outbox upstream in order, one CALL at a time (see the module docstring)."""
        outbox = self.outbox
        while True:
            step = outbox.next_replay(self._clock())
            if (
                step is None
                and self._charger_left is not None
                and outbox.in_flight is None
                and (outbox.empty or outbox.retry_at is not None)
            ):
                self._finish(self._charger_left)  # replayed (or waiting for a retry): done
                return
            if step is None:
                if outbox.retry_at is not None and outbox.entries:
                    await trio.sleep(max(0.0, outbox.retry_at - self._clock()))
                else:
                    self._queued = trio.Event()
                    await self._queued.wait()
                continue
            if isinstance(step, (Completed, DeadLetter)):
                await self._settle(step)
                continue
            self._count_rewrites()
            self._replay_answered = trio.Event()
            if step.mark_sent:  # at most once: stored as sent before it can reach the back-office
                await self._store.write(Write(self.identity, self._epoch, sending=[step.entry.seq]))
            await self._send_upstream(encode_frame(TEXT, step.frame, mask=True))
            with trio.move_on_after(self.settings.call_timeout):
                await self._replay_answered.wait()
            answer, self._replay_answer = self._replay_answer, None
            if answer is None:
                log.warning(
                    "replayed CALL unanswered: reconnecting",
                    extra={"identity": self.identity, "action": step.entry.action},
                )
                raise _UpstreamLost
            outcome = outbox.replay_answer(answer, self._clock())
            if outcome is not None:
                await self._settle(outcome)

    async def _settle(self, outcome: ReplayOutcome) -> None:
        """Store a replay outcome before anything else is replayed."""
        entry = outcome.entry
        write = Write(self.identity, self._epoch)
        if isinstance(outcome, Completed):
            write.delete.append(entry.seq)
            self._meters.replayed.inc()
        elif isinstance(outcome, Retry):
            write.attempts.append(entry)
            self._meters.retries.inc()
        else:
            write.dead.append((entry, outcome.reason))
            self._meters.dead_letters.inc()
            log.error(
                "outbox entry dead-lettered",
                extra={
                    "identity": self.identity,
                    "seq": entry.seq,
                    "action": entry.action,
                    "reason": outcome.reason,
                },
            )
        transaction = None if isinstance(outcome, Retry) else outcome.transaction
        if transaction is not None:
            write.transactions.append(transaction)
        await self._store.write(write)
        self._progress.set()
        if (
            transaction is not None
            and entry.action == "StartTransaction"
            and transaction.real is not None
        ):
            self._assigned(transaction.provisional, transaction.real)
        if self._live():
            log.info("outbox replayed", extra={"identity": self.identity})

    def _assigned(self, provisional: int, real: int) -> None:
        """Tell the session store the real id of a transaction it knows by its provisional one."""
        if self._capture is not None:
            event = TransactionIdAssigned(
                "", self.identity, self._clock(), str(provisional), str(real)
            )
            self._capture.submit([msgspec.structs.replace(event, event_id=event_id(event))])

    def _count_rewrites(self) -> None:
        if self.outbox.rewrites != self._rewrites_seen:
            self._meters.rewrites.inc(self.outbox.rewrites - self._rewrites_seen)
            self._rewrites_seen = self.outbox.rewrites

    # -- writing and tracking -----------------------------------------------------------------
    async def _send_charger(self, frame: bytes) -> None:
        if self._charger_left is not None:
            return  # the charger left while the replay goes on: nobody to tell
        async with self._charger_lock:
            try:
                await self.charger.transport.send(frame)
            except _STREAM_ERRORS:
                self.charger.gone = True
                raise _End(
                    LinkEnd.CHARGER_ERROR, {"upstream": (INTERNAL, "peer connection failed")}
                ) from None

    async def _send_upstream(self, frame: bytes) -> None:
        """Write to the upstream; a failure ends the connection (the relay goes offline)."""
        upstream = self.upstream
        if upstream is None:
            raise _UpstreamLost
        async with self._upstream_lock:
            try:
                await upstream.transport.send(frame)
            except _STREAM_ERRORS:
                upstream.gone = True
                self._connection.cancel()
                raise _UpstreamLost from None

    def _track_charger(self, message: Message, rewritten: bytes | None = None) -> None:
        """Capture a charger message as the back-office sees it (ids mapped)."""
        if self._capture is not None:
            self._capture.from_charger(self._charger_view(message, rewritten), self._clock())

    @staticmethod
    def _charger_view(message: Message, rewritten: bytes | None) -> Message:
        """A charger CALL with its payload as the back-office sees it (`rewritten`, if any)."""
        if rewritten is None:
            return message
        return text_message(call_frame(message.unique_id or "", message.action or "", rewritten))

    def _track_upstream(self, message: Message) -> None:
        if self._capture is not None:
            self._capture.from_upstream(message, self._clock())

    # -- closing ----------------------------------------------------------------------------
    async def _close_sides(self) -> None:
        assert self._end is not None
        codes = self._end.codes
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._close, self.charger, codes.get("charger"))
                upstream = self.upstream
                if upstream is not None:
                    self._set_upstream(None)
                    nursery.start_soon(self._close, upstream, codes.get("upstream"))

    async def _close(self, side: Side, code: tuple[int, str] | None) -> None:
        if code is None:
            await trio.aclose_forcefully(side.stream)
        else:
            await close_side(side, code, self._close_timeout)


# Ends caused by the charger leaving: a replay under way is finished before the relay ends.
_CHARGER_LEFT = frozenset({LinkEnd.CHARGER_EOF, LinkEnd.CHARGER_ERROR, LinkEnd.CLOSED})


def _both(code: int, reason: str) -> dict[str, tuple[int, str]]:
    return {"charger": (code, reason), "upstream": (code, reason)}


def _as_end(exc: BaseException) -> _End:
    if isinstance(exc, _End):
        return exc
    if isinstance(exc, Fenced):
        return _End(
            LinkEnd.REPLACED,
            {
                "charger": (GOING_AWAY, "replaced by a new connection"),
                "upstream": (GOING_AWAY, "going away"),
            },
        )
    log.warning("outbox store unavailable: closing the charger", extra={"error": str(exc)})
    return _End(
        LinkEnd.STORE_UNAVAILABLE,
        {
            "charger": (GOING_AWAY, "proxy queue unavailable"),
            "upstream": (GOING_AWAY, "going away"),
        },
    )
