"""A link: one charger connection and its upstream connection, forwarded byte for byte.

Two pumps move bytes as received (`receive_some` → `send_all`); each direction's bytes also go
through a `FrameReader` on the side, which reports the messages that passed (for metrics, and
later session capture) and the protocol errors that end the link. The proxy never re-frames:
pings, pongs, fragments and close frames pass end to end.

With the native engine (`engine`) and plain TCP on both sides, the steady state runs in the
engine instead of the pumps (see `proxy.forward.engine`): the link's task waits for the engine to
hand the link back, then goes on with the pumps exactly where the engine stopped: a close frame,
a protocol error, end of file or a failed read or write is handled here as if the pumps had met
it, and a stop or drain asks the engine for the link first.

Ending: the first pump to stop decides how the link ends (`LinkEnd`); then each side that still
needs one gets a close frame of our own (only at a frame boundary, so nothing is corrupted), we
wait up to `close_timeout` for its close reply, and both sockets are closed. Cancellation from
outside (`stop`) ends the link the same way, shielded and bounded in time. No exception of a
link escapes `run` other than cancellation of the caller.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter, time
from typing import Any

import trio

from proxy._codec import Handback
from proxy.capture.capture import Capture
from proxy.forward.engine import ForwardingEngine, Turn
from proxy.forward.policy import STOP_REASONS, LinkEnd, charger_can_stay, is_outage
from proxy.forward.side import STREAM_ERRORS, Side, close_side
from proxy.forward.transport import FailedReceive, SocketTransport
from proxy.outbox.learned import OBSERVED_ACTIONS, LiveObserver
from proxy.wire.codec import (
    CALL,
    CALLERROR,
    CALLRESULT,
    Message,
    ProtocolError,
    encode_close,
    encode_frame,
    text_message,
)
from proxy.wire.ocpp import CloseCode

log = logging.getLogger("proxy.link")

# Bound on remembered unanswered CALL ids per direction (a charger may never answer).
_MAX_PENDING = 32


def _remember_call(pending: dict[str, None], unique_id: str) -> None:
    """Remember a CALL as unanswered, as its newest; past `_MAX_PENDING` the oldest is
    forgotten (as the native engine does, so a link's state is the same on either path)."""
    pending.pop(unique_id, None)
    if len(pending) >= _MAX_PENDING:
        del pending[next(iter(pending))]
    pending[unique_id] = None


_STREAM_ERRORS = STREAM_ERRORS


_NO_MESSAGES: list[Message] = []  # never appended to
GOING_AWAY, INTERNAL = CloseCode.GOING_AWAY, CloseCode.INTERNAL_ERROR


@dataclass(frozen=True)
class OutboxWatch:
    """With an outbox: an upstream outage leaves the charger connected (UPSTREAM_LOST), and what
    the link learns for the outbox (`observer`: authorisations, answered starts) is kept
    (`remember`, never waiting)."""

    observer: LiveObserver
    remember: Callable[[list[tuple[str, str, Any]]], None]


class Link:
    """Forwarding between a charger and its upstream; `run` returns how the link ended.

    `close_timeout` bounds how long a started close handshake may take, and our own closing.
    Each side's `trailing` bytes (read behind its handshake) go first. `capture`: session
    capture of what passes (None: none); `outbox`: with an outbox (see `OutboxWatch`);
    `engine`: the worker's native forwarding engine (None: the pumps forward everything).
    """

    # slots: a worker holds a link per connected charger
    __slots__ = (
        "_capture",
        "_close_timeout",
        "_codes",
        "_deadline",
        "_draining",
        "_end",
        "_engine",
        "_keep_charger",
        "_last_active",
        "_last_call",
        "_lost_as",
        "_scope",
        "_sending",
        "_turn",
        "carried",
        "charger",
        "identity",
        "outbox",
        "upstream",
    )

    def __init__(
        self,
        identity: str,
        charger: Side,
        upstream: Side,
        close_timeout: float,
        *,
        capture: Capture | None = None,
        outbox: OutboxWatch | None = None,
        engine: ForwardingEngine | None = None,
    ) -> None:
        self.identity = identity
        self._engine = engine
        self._turn: Turn | None = None  # the link's stay in the engine, while there
        self._capture = capture
        self.outbox = outbox
        # With an outbox, `carried` holds what the charger sent that may not have reached the upstream.
        self._keep_charger = outbox is not None
        self.carried: list[Message] = []
        # how the link ends if the charger cannot be handed over
        self._lost_as: LinkEnd | None = None
        self._last_call: Message | None = None  # the charger's latest CALL, until answered
        self._sending: list[Message] = []  # the charger's messages being sent upstream now
        self.charger = charger
        self.upstream = upstream
        self._close_timeout = close_timeout
        self._scope: trio.CancelScope | None = None  # the pumps' scope, while they run
        self._deadline = math.inf  # by when the pumps must have stopped
        self._end: LinkEnd | None = None
        self._codes: dict[Side, tuple[int, str]] = {}
        self._draining = False
        self._last_active = perf_counter()  # when bytes last passed, either way

    # -- control from outside ------------------------------------------------------------
    def stop(self, end: LinkEnd) -> None:
        """End the link now for REPLACED, IDLE or SHUTDOWN; both peers get 1001."""
        self._finish(end, self._both(GOING_AWAY, STOP_REASONS[end]))

    def drain(self, deadline: float) -> None:
        """End the link with SHUTDOWN once no CALL is in flight, or at `deadline` at the latest."""
        self._draining = True
        self._limit(deadline)
        if self._turn is not None and self._engine is not None:
            self._engine.release(self._turn)  # what is in flight is known once it is back
        else:
            self._end_if_drained()

    @property
    def last_active(self) -> float:
        """When bytes last passed, either way (`perf_counter` time)."""
        if self._turn is not None and self._engine is not None:
            idle = self._engine.idle_seconds(self._turn)
            if idle is not None:
                return perf_counter() - idle
        return self._last_active

    # -- running --------------------------------------------------------------------------
    async def run(self) -> LinkEnd:
        try:
            if self._end is None and (turn := self._to_engine()) is not None:
                # Stops and drains ask the engine for the link meanwhile (`_finish`, `drain`);
                # cancelled from outside, it is asked back too and still awaited. The task
                # parks itself here, not in a function of its own: a frame less per idle link.
                if turn.parks():
                    await trio.lowlevel.wait_task_rescheduled(turn)
                assert turn.handback is not None
                self._resume(turn.handback)
                await trio.lowlevel.checkpoint_if_cancelled()  # cancelled meanwhile: now
                if self._draining:
                    self._end_if_drained()
            if self._end is None:  # a link in the engine keeps no cancel scope
                with trio.CancelScope(deadline=self._deadline) as self._scope:
                    await self._pumps()
            if self._end is LinkEnd.UPSTREAM_LOST:
                self._hand_over()
            # the scope's deadline: a close handshake or drain took too long
            elif self._end is None:
                if self._draining:
                    self.stop(LinkEnd.SHUTDOWN)
                else:
                    self._finish(LinkEnd.CLOSE_TIMEOUT, {})
        except Exception:
            log.exception("link failed", extra={"identity": self.identity})
            self._finish(LinkEnd.INTERNAL_ERROR, self._both(INTERNAL, "internal error"))
        finally:
            await self._close_sides()
        assert self._end is not None
        return self._end

    async def _pumps(self) -> None:
        async with trio.open_nursery() as nursery:
            # One pump in a task of its own, the other in this one: a task per link less.
            nursery.start_soon(self._pump, self.upstream, self.charger, name="upstream pump")
            await self._pump(self.charger, self.upstream)

    # -- in the native engine ----------------------------------------------------------------
    def _to_engine(self) -> Turn | None:
        """Hand the link to the engine if it can take it: plain TCP both ways, no drain begun.

        None: it cannot (or has stopped), and the pumps forward everything.
        """
        engine = self._engine
        charger, upstream = self.charger, self.upstream
        if (
            engine is None
            or engine.broken
            or self._draining
            or not isinstance(charger.transport, SocketTransport)
            or not isinstance(upstream.transport, SocketTransport)
        ):
            return None
        turn = self._turn = engine.adopt(
            self,
            (charger.transport.fileno, upstream.transport.fileno),
            (charger.reader, upstream.reader),
            (charger.trailing, upstream.trailing),
            (list(charger.pending), list(upstream.pending)),
            self._tracked(),
            self._keep_charger,
            copy_charger=charger.copies is not None,
        )
        if turn is not None:
            charger.trailing = upstream.trailing = b""
        return turn

    def _tracked(self) -> frozenset[str]:
        """Actions of the charger's CALLs that capture and the outbox need (with their answers)."""
        actions = self._capture.tracker.actions if self._capture is not None else frozenset()
        return actions | OBSERVED_ACTIONS if self.outbox is not None else actions

    def passed_natively(self, side: int, messages: list[Message], at: float) -> None:
        """Tracked messages the engine forwarded: to capture and the outbox, as `_passed` does,
        and the charger's CALLs and SENDs to its copies (see `Side.copies`)."""
        capture, outbox = self._capture, self.outbox
        from_upstream = side == 1
        if not from_upstream and self.charger.copies is not None:
            self.charger.copies(messages)
        for message in messages:
            if capture is not None:
                if from_upstream:
                    capture.from_upstream(message, at)
                else:
                    capture.from_charger(message, at)
            if outbox is not None:
                if not from_upstream:
                    outbox.observer.on_call(message)
                elif learned := outbox.observer.on_answer(message):
                    outbox.remember(learned)

    def _resume(self, back: Handback) -> None:
        """Take the link back from the engine in the state it left it."""
        self._last_active = self.last_active
        self._turn = None
        sides = (self.charger, self.upstream)
        for side, trailing, unsent, pending in zip(
            sides, back.trailing, back.unsent, back.pending, strict=True
        ):
            side.trailing, side.unsent, side.pending = trailing, unsent, dict.fromkeys(pending)
        for side, source in zip(sides, reversed(sides), strict=True):
            side.dirty = bool(side.unsent) or not source.reader.at_frame_boundary
        if self._keep_charger:
            self._last_call = text_message(back.last_call) if back.last_call is not None else None
        if back.why == "read_failed" and back.side is not None:
            side = sides[back.side]
            error = trio.BrokenResourceError(f"socket connection broken: errno {back.errno}")
            side.transport = FailedReceive(side.transport, error)
        elif back.why == "panicked":
            self._finish(LinkEnd.INTERNAL_ERROR, self._both(INTERNAL, "internal error"))

    def _both(self, code: int, reason: str) -> dict[Side, tuple[int, str]]:
        return {self.charger: (code, reason), self.upstream: (code, reason)}

    def _finish(self, end: LinkEnd, codes: dict[Side, tuple[int, str]]) -> None:
        """Record how the link ends (first call wins) and stop both pumps."""
        if self._end is not None:
            return
        self._end = end
        self._codes = codes
        if self._scope is not None:
            self._scope.cancel()
        if self._turn is not None and self._engine is not None:
            self._engine.release(self._turn)  # in the engine: no scope is entered to cancel

    def _limit(self, deadline: float) -> None:
        """The pumps stop by `deadline` at the latest (kept until they start)."""
        self._deadline = min(self._deadline, deadline)
        if self._scope is not None:
            self._scope.deadline = self._deadline

    def _end_if_drained(self) -> None:
        charger, upstream = self.charger, self.upstream
        if (
            self._draining
            and not charger.pending
            and not upstream.pending
            and charger.reader.at_frame_boundary
            and upstream.reader.at_frame_boundary
            and not (charger.unsent or upstream.unsent or charger.trailing or upstream.trailing)
        ):
            self.stop(LinkEnd.SHUTDOWN)

    def _failed(self, side: Side) -> LinkEnd:
        return LinkEnd.CHARGER_ERROR if side is self.charger else LinkEnd.UPSTREAM_ERROR

    async def _pump(self, src: Side, dst: Side) -> None:
        """Forward what `src` sends to `dst` until either fails or `src` hangs up."""
        feed = src.reader.feed
        receive = src.transport.receive
        meters = src.meters
        observe = meters.forward_seconds.observe
        count_bytes = meters.bytes.inc
        tracking = self._capture is not None
        # With an outbox: watch for an upstream outage, and remember what the relay may need.
        keep = self._keep_charger
        from_upstream = src is self.upstream
        data, src.trailing = src.trailing, b""
        started = perf_counter()
        if dst.unsent:  # fed by the engine but not yet written: goes first
            unsent, dst.unsent = dst.unsent, b""
            if not await self._send(src, dst, unsent):
                return
        while True:
            if data:
                whole = keep and from_upstream and src.reader.at_message_boundary
                try:
                    messages = feed(data)
                except ProtocolError as exc:
                    src.broke_protocol = True
                    meters.codec_error(exc.close_code)
                    if keep and from_upstream:
                        self._upstream_lost(
                            LinkEnd.UPSTREAM_PROTOCOL_ERROR, (exc.close_code, exc.reason)
                        )
                        return
                    end = (
                        LinkEnd.CHARGER_PROTOCOL_ERROR
                        if src is self.charger
                        else LinkEnd.UPSTREAM_PROTOCOL_ERROR
                    )
                    self._finish(
                        end,
                        {src: (exc.close_code, exc.reason), dst: (INTERNAL, "peer protocol error")},
                    )
                    return
                if src.copies is not None:  # as read, whether the other side gets them or not
                    src.copies(messages)
                if whole and src.reader.closed and messages and is_outage(messages[-1].close_code):
                    await self._upstream_went_away(messages)
                    return
                if keep and not from_upstream:
                    self._sending = messages  # if the link ends during the send, these may be lost
                if not await self._send(src, dst, data):
                    return
                count_bytes(len(data))
                self._passed(src, dst, messages, time() if tracking else 0.0)
                # From the read to the write, capture's hand-off included.
                self._last_active = done = perf_counter()
                observe(done - started)
                if keep and not from_upstream:
                    self._sending = []
                if src.reader.closed:
                    # A close frame passed: the other side has close_timeout to answer it.
                    self._limit(trio.current_time() + self._close_timeout)
                if self._draining:
                    self._end_if_drained()
                # hold nothing of this chunk while waiting for the next
                data, messages = b"", _NO_MESSAGES
            try:
                data = await receive()
            except _STREAM_ERRORS:
                src.gone = True
                if keep and from_upstream:
                    self._upstream_lost(LinkEnd.UPSTREAM_ERROR, None)
                    return
                self._finish(self._failed(src), {dst: (INTERNAL, "peer connection failed")})
                return
            started = perf_counter()
            if data and keep and not from_upstream and self._end is LinkEnd.UPSTREAM_LOST:
                # Read before our cancellation took effect: for the relay, not for a lost upstream.
                self.charger.trailing = data
                return
            if not data:
                src.gone = True
                if keep and from_upstream and not src.reader.closed:
                    self._upstream_lost(LinkEnd.UPSTREAM_EOF, None)
                elif src.reader.closed:
                    self._finish(LinkEnd.CLOSED, {})
                else:
                    end = LinkEnd.CHARGER_EOF if src is self.charger else LinkEnd.UPSTREAM_EOF
                    self._finish(end, {dst: (GOING_AWAY, "peer went away")})
                return

    async def _send(self, src: Side, dst: Side, data: bytes) -> bool:
        """Write what `src` sent to `dst`; on failure end the link (or hand it over) and say so."""
        dst.dirty = True
        try:
            await dst.transport.send(data)
        except _STREAM_ERRORS:
            dst.gone = True
            if self._keep_charger and dst is self.upstream:
                self._upstream_lost(self._failed(dst), None)
            else:
                self._finish(self._failed(dst), {src: (INTERNAL, "peer connection failed")})
            return False
        dst.dirty = not src.reader.at_frame_boundary
        return True

    def _passed(self, src: Side, dst: Side, messages: list[Message], received_at: float) -> None:
        """Account for messages `src` sent that went through: metrics, capture, pending CALLs."""
        count = src.meters.count
        keep, from_upstream = self._keep_charger, src is self.upstream
        capture = self._capture
        for message in messages:
            count(message.opcode, message.message_type, message.action)
            if capture is not None:  # never blocks (see journal)
                if from_upstream:
                    capture.from_upstream(message, received_at)
                else:
                    capture.from_charger(message, received_at)
            if message.message_type == CALL:
                _remember_call(src.pending, message.unique_id or "")
                if keep and not from_upstream:
                    self._charger_call(message)
            elif message.message_type in (CALLRESULT, CALLERROR):
                dst.pending.pop(message.unique_id or "", None)
                if keep and from_upstream:
                    self._upstream_answer(message)

    # -- an upstream outage (with an outbox) ----------------------------------------------------
    def _charger_call(self, message: Message) -> None:
        self._last_call = message
        if self.outbox is not None:
            self.outbox.observer.on_call(message)

    def _upstream_answer(self, message: Message) -> None:
        last = self._last_call
        if last is not None and last.unique_id == message.unique_id:
            self._last_call = None
        if self.outbox is not None:
            if learned := self.outbox.observer.on_answer(message):
                self.outbox.remember(learned)

    def _upstream_lost(self, end: LinkEnd, upstream_code: tuple[int, str] | None) -> None:
        """End for a relay to take the charger over, if the charger's side is still clean."""
        if not charger_can_stay(self.charger, self._draining):
            self._finish(end, {self.charger: (GOING_AWAY, "peer went away")})
            return
        self._lost_as = end
        self._finish(LinkEnd.UPSTREAM_LOST, {self.upstream: upstream_code} if upstream_code else {})

    def _hand_over(self) -> None:
        """Both pumps have stopped after UPSTREAM_LOST: settle what the relay takes over.

        A pump may have run on briefly after the decision (a write that completes at once is no
        checkpoint), so what may not have reached the upstream is only known now: the unanswered
        CALL, and what was being sent. If the charger's side stopped being clean meanwhile, the
        link ends as the outage that caused it, and the charger is closed.
        """
        if not charger_can_stay(self.charger, self._draining):
            assert self._lost_as is not None
            self._end = self._lost_as
            self._codes[self.charger] = (GOING_AWAY, "peer went away")
            return
        self.carried = ([self._last_call] if self._last_call is not None else []) + self._sending
        self._last_call, self._sending = None, []

    async def _upstream_went_away(self, messages: list[Message]) -> None:
        """The upstream closed for an outage: deliver what came before its close, answer the close."""
        charger = self.charger
        if charger.dirty:  # cannot happen at a message boundary; be safe anyway
            self._upstream_lost(LinkEnd.UPSTREAM_EOF, None)
            return
        frames = b"".join(encode_frame(m.opcode, m.data, mask=False) for m in messages[:-1])
        try:
            if frames:
                await charger.transport.send(frames)
        except _STREAM_ERRORS:
            charger.gone = True
        for message in messages[:-1]:
            if message.message_type in (CALLRESULT, CALLERROR):
                self._upstream_answer(message)
        close = messages[-1]
        code = (
            (close.close_code, close.close_reason or "") if close.close_code is not None else None
        )
        self._upstream_lost(LinkEnd.UPSTREAM_EOF, code or (1000, ""))

    # -- closing --------------------------------------------------------------------------
    async def _close_sides(self) -> None:
        """Send each side its close frame if it needs one, await its answer briefly, close sockets.

        After UPSTREAM_LOST only the upstream is closed: the charger's connection goes on in a relay.
        """
        if self._end is LinkEnd.UPSTREAM_LOST:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self._close_timeout):
                    await self._close_side(self.upstream, self.charger)
                await trio.aclose_forcefully(self.upstream.stream)
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._close_timeout):
                if self._end in STOP_REASONS:
                    await self._close_charger_first()
                async with trio.open_nursery() as nursery:
                    for side, other in (
                        (self.charger, self.upstream),
                        (self.upstream, self.charger),
                    ):
                        nursery.start_soon(self._close_side, side, other)
            for side in (self.charger, self.upstream):
                await trio.aclose_forcefully(side.stream)

    async def _close_charger_first(self) -> None:
        """On a stop of ours, close the charger and forward what it still sends until it answers.

        A charger may send a CALL (a queued StopTransaction, say) before it sees our close; that
        CALL, and then the charger's close reply, still go upstream as they came.
        """
        charger, upstream = self.charger, self.upstream
        code = self._codes.pop(charger, None)
        if code is None or charger.gone or charger.dirty or upstream.reader.closed:
            return
        try:
            await charger.transport.send(encode_close(code[0], code[1], mask=False))
            if upstream.unsent and not upstream.gone:  # the engine's held chunk goes first
                unsent, upstream.unsent = upstream.unsent, b""
                try:
                    await upstream.transport.send(unsent)
                    upstream.dirty = not charger.reader.at_frame_boundary
                except _STREAM_ERRORS:
                    upstream.gone = True
            data, charger.trailing = charger.trailing, b""  # read by the engine, not yet fed
            while not charger.reader.closed:
                if not data:
                    data = await charger.transport.receive()
                    if not data:
                        charger.gone = True
                        return
                messages = charger.reader.feed(data)
                if charger.copies is not None:
                    charger.copies(messages)
                if self._capture is not None:
                    at = time()
                    for message in messages:  # a queued StopTransaction must still be captured
                        self._capture.from_charger(message, at)
                if not upstream.gone and not upstream.dirty:
                    upstream.dirty = True
                    try:
                        await upstream.transport.send(data)
                    except _STREAM_ERRORS:
                        upstream.gone = True
                    upstream.dirty = not charger.reader.at_frame_boundary
                data = b""
        except ProtocolError:
            charger.broke_protocol = True
        except (*_STREAM_ERRORS, trio.BusyResourceError):
            charger.gone = True

    async def _close_side(self, side: Side, other: Side) -> None:
        """Our close frame to `side` if it gets one; then its answer (the caller closes sockets).

        When the other side's close passed through to it, no close of ours goes: its answer to
        that one is awaited. Without either there is nothing to wait for.
        """
        if other.reader.closed:
            await close_side(side, None, self._close_timeout, close_socket=False)
        elif (code := self._codes.get(side)) is not None:
            await close_side(side, code, self._close_timeout, close_socket=False)
