"""Mirrors: copies of a charger's CALLs to secondary back-offices, without touching the primary.

`mirrored` runs the mirrors of one charger connection (a route's `mirrors`) around the turns that
serve it. When no mirror may call the charger (every `allow` empty, the default), nothing needs
filtering or serialising: the charger's side hands the mirrors every message as it is read
(`Side.copies`), by the link's pumps, the relay, or the native engine in its batches, so a link
on plain sockets is forwarded by the engine as without mirrors and the primary's frames never
wait on Python, let alone on a mirror.

When a mirror may call the charger, a `ChargerTap` is put in front of the charger's transport, so
the link (on the Trio pumps: the native engine only takes plain sockets) and the relays forward
through it unchanged:

- what the charger sends is cut into whole frames (`mirror_core.FrameSplitter`); every CALL and
  SEND is copied into each mirror's queue, and the frames of an answer to a mirror CALL are left
  out; all other frames reach the primary as received, byte for byte;
- what goes to the charger is read on the side; a primary CALL waits while a mirror CALL is out
  (at most the mirror's `call_timeout`), and allowed mirror CALLs are written between messages,
  one at a time, under the lock every write to the charger takes.

Each mirror has a task of its own that dials it (`dial.Dialer`, the charger's identity and
subprotocol), writes its queue and reads what it sends. It redials after a back-off of its own
(`backoff.RedialBackoff`) when its connection ends or the mirror refuses the charger; a mirror
that cannot be reached is probed by one connection at a time for all the worker's chargers
(`MirrorRedials`), so an outage of a mirror costs a dial now and then, not a dial per charger. A
mirror that is down, slow, or sends garbage or oversized frames only loses its own connection (it
is redialled) and its own copies (counted): the primary's link never waits on a mirror. The
decisions are `mirror_core.MirrorCore`'s.

Metrics (`MirrorMetrics`) are labelled by the mirror's host:port, never the charger.

Resource handling: mirror connections are closed when the charger's connection ends, a close
frame first (bounded by `close_timeout`). Cancellation: leaving `mirrored` cancels the mirror
tasks; the tap itself never holds a write or a read of the link's beyond the wait for a mirror
CALL's answer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from proxy.forward.backoff import RedialBackoff, SharedRedial
from proxy.forward.dial import Dialer
from proxy.forward.mirror_core import FrameSplitter, FromCharger, MirrorCore, MirrorPolicy
from proxy.forward.refusal import Refusal
from proxy.forward.side import STREAM_ERRORS, Side
from proxy.forward.transport import Transport, transport_for
from proxy.routing.auth import basic_header
from proxy.routing.router import upstream_url
from proxy.runtime.config import Mirror, OutboxSettings, Route
from proxy.runtime.mirror_metrics import MirrorMetrics
from proxy.wire.codec import (
    BINARY,
    CALL,
    CLOSE,
    PING,
    PONG,
    SEND,
    TEXT,
    FrameReader,
    Message,
    ProtocolError,
    encode_close,
    encode_frame,
)
from proxy.wire.ocpp import CloseCode

log = logging.getLogger("proxy.mirror")

_DATA = (TEXT, BINARY)
# a dial's refusal outcomes that say the mirror cannot be reached (not: it refused this charger)
_UNREACHABLE = ("upstream_unreachable", "upstream_timeout")
_COPIED = (CALL, SEND)
_BATCH = 64  # texts sent to a mirror in one write, at most


class _Shared:
    """What the tap and the mirror tasks of one charger connection share: the core, the lock on
    writes to the charger, the event that wakes the tasks waiting on mirror CALLs (`changed`)
    and one per mirror that wakes its writer (`queued`)."""

    def __init__(self, core: MirrorCore, labels: list[str], metrics: MirrorMetrics) -> None:
        self.core = core
        self.labels = labels
        self.metrics = metrics
        self.lock = trio.Lock()  # held by every write to the charger
        self.changed = trio.Event()
        self.queued = [trio.Event() for _ in labels]
        self._counted = [0] * len(labels)  # what `queued` holds for each mirror's queue
        # the children of the metrics counted per message, looked up once
        self._queued_gauges = [metrics.queued.labels(label) for label in labels]
        self.dropped = [metrics.dropped.labels(label) for label in labels]

    def copy(self, message: Message) -> FromCharger:
        """A charger's data message to the core: a copy queued for each mirror, or dropped."""
        verdict = self.core.from_charger(message)
        for index in verdict.dropped:
            self.dropped[index].inc()
        for index in (*verdict.queued, *verdict.dropped):
            self.queue_changed(index)
        return verdict

    def copied(self, messages: list[Message]) -> None:
        """What the charger sent, as read (`Side.copies`): its CALLs and SENDs to each mirror."""
        for message in messages:
            if message.opcode in _DATA and message.message_type in _COPIED:
                self.copy(message)

    def kick(self) -> None:
        """The mirror CALLs' state changed: wake who waits on it."""
        self.changed.set()
        self.changed = trio.Event()

    def expire(self) -> None:
        """Answer the mirror CALLs that are out or waiting too long (see `MirrorCore.expire`)."""
        expired = self.core.expire(trio.current_time())
        for index in expired:
            self.metrics.calls.labels(self.labels[index], "timed_out").inc()
            self.queue_changed(index)
        if expired:
            self.kick()

    def queue_changed(self, index: int) -> None:
        """Mirror `index`'s queue changed: update `ere_proxy_mirror_queued`, wake its writer."""
        n = len(self.core.queues[index])
        if n != self._counted[index]:
            self._queued_gauges[index].inc(n - self._counted[index])
            self._counted[index] = n
        if n:
            self.queued[index].set()
            self.queued[index] = trio.Event()


class ChargerTap:
    """The charger's transport as the link sees it, with the mirrors' part done on the way.

    `receive` returns the charger's frames as received, less answers to mirror CALLs (it reads
    on when a read held only those); `send` writes under the shared lock and lets a primary CALL
    wait while a mirror CALL is out. What the tap's own readers cannot read (a protocol error)
    turns it into a plain pass-through: the link's reader meets the same error and ends the link.
    """

    def __init__(self, inner: Transport, shared: _Shared, limit: int, trailing: bytes) -> None:
        self._inner = inner
        self._shared = shared
        self._splitter = FrameSplitter(limit)
        self._reader = FrameReader(from_client=True, max_message_size=limit)
        self._to_charger = FrameReader(from_client=False, max_message_size=limit)
        self._held: list[bytes] = []  # frames of a data message not complete yet
        self._trailing = trailing
        self._passive = False  # reading what the charger sends failed: pass through
        self._sends_readable = True  # what we write to the charger can be read on the side
        self._clean = True  # no write to the charger was cut short

    async def receive(self) -> bytes:
        while True:
            if self._trailing:
                data, self._trailing = self._trailing, b""
            else:
                data = await self._inner.receive()
            if not data or self._passive:
                return data
            out = self._filter(data)
            if out:
                return out

    def _filter(self, data: bytes) -> bytes:
        """What of `data` goes on to the primary; copies and mirror answers are taken out.

        A chunk the reader refuses is passed on whole, unread by the mirrors (the link's reader
        refuses it too, so it never reaches the primary either).
        """
        shared = self._shared
        frames = self._splitter.feed(data)
        parsed = []
        try:
            if self._splitter.broken:
                raise ProtocolError(1009, "frame too large")
            for frame in frames:
                parsed.append((frame, self._reader.feed(frame)))
        except ProtocolError:
            self._passive = True
            out, self._held = [*self._held, *frames, self._splitter.give_up()], []
            return b"".join(out)
        out_frames: list[bytes] = []
        for frame, messages in parsed:
            if frame[0] & 0x08 and not self._held:  # a control frame between messages
                out_frames.append(frame)
                continue
            self._held.append(frame)  # a data frame, or a control frame amid a message's
            for message in messages:
                if message.opcode not in _DATA:
                    continue
                verdict = shared.copy(message)
                # an answer to a mirror CALL is left out, control frames amid it are not
                out_frames += (
                    self._held if verdict.forward else [f for f in self._held if f[0] & 0x08]
                )
                self._held = []
                if not verdict.forward or shared.core.waiting:
                    shared.kick()  # a mirror CALL was answered, or one may go now
        return b"".join(out_frames)

    async def send(self, data: bytes) -> None:
        shared = self._shared
        calls = []
        if self._sends_readable:
            try:
                calls = [m for m in self._to_charger.feed(data) if m.message_type == CALL]
            except ProtocolError:
                self._sends_readable = False  # no more mirror CALLs on this connection
        try:
            while True:
                while calls and shared.core.primary_must_wait():
                    with trio.move_on_at(shared.core.next_deadline()):
                        await shared.changed.wait()
                    shared.expire()  # never waits past the mirror CALL's deadline
                try:
                    shared.lock.acquire_nowait()  # no checkpoint on the forwarding path
                except trio.WouldBlock:
                    await shared.lock.acquire()
                if not (calls and shared.core.primary_must_wait()):
                    break
                shared.lock.release()
        except BaseException:
            self._sends_readable = False  # read on the side but never sent: no more injections
            raise
        try:
            for message in calls:
                shared.core.primary_sent(message)
            await self._write(data)
        finally:
            shared.lock.release()
            if shared.core.waiting:
                shared.kick()  # at a message boundary now, maybe

    async def _write(self, data: bytes) -> None:
        self._clean = False
        await self._inner.send(data)
        self._clean = True

    async def inject(self) -> None:
        """Write allowed mirror CALLs to the charger when one may go (see `MirrorCore.next_call`),
        between messages only. Returns when the charger's side cannot be written any more."""
        shared = self._shared
        while True:
            changed = shared.changed
            async with shared.lock:
                reader = self._to_charger
                if not (self._clean and self._sends_readable and not reader.closed):
                    return
                call = shared.core.next_call() if reader.at_message_boundary else None
                if call is not None:
                    try:
                        await self._write(encode_frame(TEXT, call.text, mask=False))
                    except STREAM_ERRORS:
                        return  # the link meets the same failure
            if call is None:
                await changed.wait()


class MirrorRedials:
    """The redials of a worker's mirrors: one `SharedRedial` per mirror (host:port) for all its
    charger connections, and the back-off settings of each connection's own redials.

    `turn` waits until a connection may dial; the dial's outcome goes back with `dialled` (or
    `abandoned`, for a probe given up). `waiting` counts, per mirror, the connections waiting
    for a probe's outcome. Mirrors are few (they come from the configuration): none is
    forgotten.
    """

    def __init__(self, settings: OutboxSettings) -> None:
        self.settings = settings
        self._redials: dict[str, SharedRedial] = {}
        self._changed: dict[str, trio.Event] = {}
        self.waiting: dict[str, int] = {}

    def _redial(self, label: str) -> SharedRedial:
        redial = self._redials.get(label)
        if redial is None:
            redial = self._redials[label] = SharedRedial(
                self.settings.redial_min, self.settings.redial_max
            )
            self._changed[label] = trio.Event()
            self.waiting[label] = 0
        return redial

    async def turn(self, label: str) -> bool:
        """Wait until a connection may dial mirror `label`; True: the dial is the probe."""
        redial = self._redial(label)
        while (turn := redial.turn(trio.current_time())) == "wait":
            changed = self._changed[label]
            self.waiting[label] += 1
            try:
                with trio.move_on_at(redial.next_probe_at):
                    await changed.wait()
            finally:
                self.waiting[label] -= 1
        return turn == "probe"

    def dialled(self, label: str, probe: bool, reached: bool) -> None:
        """The outcome of a dial `turn` allowed: whether it reached the mirror."""
        redial = self._redial(label)
        if reached:
            redial.reached(probe)
        else:
            redial.failed(trio.current_time(), probe)
        self._wake(label)

    def abandoned(self, label: str) -> None:
        self._redial(label).abandoned()
        self._wake(label)

    def _wake(self, label: str) -> None:
        self._changed[label].set()
        self._changed[label] = trio.Event()


class _Connection:
    """One connection to a mirror: writes one at a time, and whether one was cut short."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._sending = trio.Lock()
        self._clean = True

    async def send(self, data: bytes) -> None:
        async with self._sending:
            self._clean = False
            await self.transport.send(data)
            self._clean = True

    async def close(self, stream: trio.abc.Stream, timeout: float) -> None:
        """Our close frame (unless a write was cut short mid-frame), then the socket."""
        with trio.move_on_after(timeout):
            try:
                if self._clean:
                    await self.send(encode_close(CloseCode.GOING_AWAY, "", mask=True))
            except (*STREAM_ERRORS, trio.BusyResourceError):
                pass
        await trio.aclose_forcefully(stream)


class MirrorSet:
    """The mirrors of one charger connection; `run` serves them until cancelled."""

    def __init__(
        self,
        identity: str,
        version: str,
        mirrors: tuple[Mirror, ...],
        dialer: Dialer,
        redials: MirrorRedials,
        metrics: MirrorMetrics,
        charger: Side,
    ) -> None:
        self.identity = identity
        self.version = version
        self.mirrors = mirrors
        self._dialer = dialer
        self._redials = redials
        policies = [
            MirrorPolicy(frozenset(m.allow), m.queue, m.overflow, m.call_timeout) for m in mirrors
        ]
        # ids of our own for mirror CALLs: a random prefix no peer can guess
        core = MirrorCore(policies, f"mirror-{secrets.token_hex(6)}-")
        self._routes = [Route(upstream=m.url, ca_bundle=m.ca_bundle) for m in mirrors]
        labels = []
        for route in self._routes:
            _, host, port, _ = upstream_url(route, identity)
            labels.append(f"{host}:{port}")  # as the dials of the mirror are counted
        for label in labels:
            metrics.serving(label)
        self.shared = _Shared(core, labels, metrics)
        self._limit = dialer.settings.max_message_size
        self._charger = charger
        self.tap: ChargerTap | None = None
        if any(m.allow for m in mirrors):
            self.tap = ChargerTap(charger.transport, self.shared, self._limit, charger.trailing)
            charger.trailing = b""
            charger.transport = self.tap
        else:  # copies only: the charger's side hands them over as it reads
            charger.copies = self.shared.copied

    async def run(self) -> None:
        """Dial and serve every mirror, write mirror CALLs to the charger and time them out."""
        async with trio.open_nursery() as nursery:
            if self.tap is not None:
                nursery.start_soon(self._guarded, self.tap.inject)
                nursery.start_soon(self._guarded, self._expire)
            for index, mirror in enumerate(self.mirrors):
                nursery.start_soon(self._guarded, self._serve_mirror, index, mirror)

    async def _guarded(self, task: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run a mirror task; a bug in it is logged and ends that task only, never the link."""
        try:
            await task(*args)
        except Exception:
            log.exception("mirror task failed", extra={"identity": self.identity})

    def forget(self) -> None:
        """The charger's connection ended: what still waits for the mirrors is dropped."""
        self._charger.copies = None
        for index, queue in enumerate(self.shared.core.queues):
            queue.clear()
            self.shared.queue_changed(index)

    async def _expire(self) -> None:
        shared = self.shared
        while True:
            changed = shared.changed
            with trio.move_on_at(shared.core.next_deadline()):
                await changed.wait()
            shared.expire()

    async def _serve_mirror(self, index: int, mirror: Mirror) -> None:
        """Keep mirror `index` connected: dial, serve, redial after a back-off; never raises."""
        label = self.shared.labels[index]
        metrics = self.shared.metrics
        route = self._routes[index]
        authorization = (
            basic_header(mirror.username, mirror.password)
            if mirror.username is not None and mirror.password is not None
            else None
        )
        redials = self._redials
        backoff = RedialBackoff(redials.settings.redial_min, redials.settings.redial_max)
        while True:
            await trio.sleep_until(backoff.next_dial_at)
            probe = await redials.turn(label)
            try:
                await self._dialer.pace(route)  # a mirror back-office's dials, paced per host
                stream, accepted, trailing = await self._dialer.dial(
                    route, self.identity, [self.version], authorization, redial=True, mirror=True
                )
            except Refusal as refusal:
                reached = refusal.outcome not in _UNREACHABLE
                redials.dialled(label, probe, reached)
                if reached:  # the mirror refused this charger: its own back-off
                    backoff.dial_failed(trio.current_time())
                continue
            except BaseException:  # cancelled: the next connection probes instead
                if probe:
                    redials.abandoned(label)
                raise
            redials.dialled(label, probe, reached=True)
            started = trio.current_time()
            connection = _Connection(transport_for(stream))
            try:
                if accepted.subprotocol not in (self.version, None):
                    log.warning(
                        "mirror chose another subprotocol",
                        extra={"identity": self.identity, "mirror": label},
                    )
                    continue
                metrics.connected.labels(label).inc()
                try:
                    await self._connected(index, connection, trailing)
                finally:
                    metrics.connected.labels(label).dec()
            finally:
                self.shared.core.mirror_lost(index)
                self.shared.queue_changed(index)
                with trio.CancelScope(shield=True):
                    await connection.close(stream, self._dialer.settings.close_timeout)
                backoff.connection_lost(trio.current_time(), trio.current_time() - started)

    async def _connected(self, index: int, connection: _Connection, trailing: bytes) -> None:
        """Serve one connection to mirror `index` until it ends (either way)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_mirror, index, connection)
            await self._read_mirror(index, connection, trailing)
            nursery.cancel_scope.cancel()

    async def _write_mirror(self, index: int, connection: _Connection) -> None:
        shared = self.shared
        queue = shared.core.queues[index]
        sent = shared.metrics.sent.labels(shared.labels[index])
        while True:
            queued = shared.queued[index]
            texts = queue.take(_BATCH)
            if not texts:
                await queued.wait()
                continue
            shared.queue_changed(index)
            try:
                await connection.send(b"".join(encode_frame(TEXT, t, mask=True) for t in texts))
            except STREAM_ERRORS:
                return  # the reader sees the connection end too
            sent.inc(len(texts))

    async def _read_mirror(self, index: int, connection: _Connection, data: bytes) -> None:
        """Read what mirror `index` sends until it closes or fails (a protocol error is counted)."""
        shared = self.shared
        label = shared.labels[index]
        reader = FrameReader(from_client=False, max_message_size=self._limit)
        try:
            while True:
                if data:
                    for message in reader.feed(data):
                        if message.opcode == PING:
                            await connection.send(encode_frame(PONG, message.data, mask=True))
                        elif message.opcode == CLOSE:
                            return
                        elif message.opcode in _DATA:
                            outcome = shared.core.from_mirror(index, message, trio.current_time())
                            if outcome.kind == "answer_dropped":
                                shared.metrics.answers_dropped.labels(label).inc()
                            else:
                                shared.metrics.calls.labels(label, outcome.kind).inc()
                            shared.queue_changed(index)
                            if outcome.kind == "allowed":
                                shared.kick()
                data = await connection.transport.receive()
                if not data:
                    return
        except ProtocolError as exc:
            shared.metrics.errors.labels(label).inc()
            log.warning(
                "mirror broke the protocol",
                extra={"identity": self.identity, "mirror": label, "error": exc.reason},
            )
        except STREAM_ERRORS:
            return


@asynccontextmanager
async def mirrored(
    identity: str,
    version: str,
    mirrors: tuple[Mirror, ...],
    dialer: Dialer,
    redials: MirrorRedials,
    metrics: MirrorMetrics,
    charger: Side,
) -> AsyncIterator[None]:
    """Run the charger's mirrors while the block serves its connection (a connection whose route
    has none keeps no context: the server skips this)."""
    mirror_set = MirrorSet(identity, version, mirrors, dialer, redials, metrics, charger)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mirror_set.run)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
            mirror_set.forget()
