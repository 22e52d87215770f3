"""A connection's session capture: its tracker, and the journal its events go to.

Links and relays hand every OCPP message that passed to `from_charger` or `from_upstream`; the
tracker (sans-IO) turns them into events and `submit` hands those over without waiting (see the
journal). Never raises: the tracker turns its own failures into `Unparseable` events.

The journal must see a connection's events in the order they were made (a transaction's rename
after every event under its provisional id). A relay holds an offline answer's events until its
outbox entry is stored (`hold`, `release`); whatever is submitted meanwhile waits behind them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import msgspec

from proxy.capture.events import AnyEvent, Event
from proxy.capture.tracker import Tracker
from proxy.wire.codec import Message


class Held:
    """A place in a capture's order for events that wait (see `Capture.hold`)."""

    __slots__ = ("events", "released")

    def __init__(self, events: list[Event], *, released: bool) -> None:
        self.events = events
        self.released = released


class Capture:
    """See the module docstring."""

    __slots__ = ("_queue", "_submit", "tracker")

    def __init__(self, tracker: Tracker, submit: Callable[[list[Event]], None]) -> None:
        self.tracker = tracker
        self._submit = submit
        self._queue: deque[Held] = deque()  # from the oldest held place on

    def from_charger(self, message: Message, at: float) -> None:
        if events := self.tracker.from_charger(message, at):
            self.submit(events)

    def from_upstream(self, message: Message, at: float) -> None:
        if events := self.tracker.from_upstream(message, at):
            self.submit(events)

    def answered_offline(self, call: Message, answer: Message, at: float) -> list[Event]:
        """The events of a CALL the proxy answers itself, and of that answer, not yet submitted:
        the relay stores them with the CALL's outbox entry first (`encode_events`), then submits."""
        return [*self.tracker.from_charger(call, at), *self.tracker.from_upstream(answer, at)]

    def submit(self, events: list[Event]) -> None:
        """Hand `events` to the journal, or queue them behind events still held."""
        if self._queue:
            self._queue.append(Held(events, released=True))
        else:
            self._submit(events)

    def hold(self, events: list[Event]) -> Held:
        """Keep `events` back until `release`; events submitted meanwhile wait behind them."""
        held = Held(events, released=False)
        self._queue.append(held)
        return held

    def release(self, held: Held, *, submit: bool = True) -> None:
        """Submit the held events (or drop them: `submit=False`), then what waited behind them,
        up to the next place still held."""
        held.released = True
        if not submit:
            held.events = []
        while self._queue and self._queue[0].released:
            if events := self._queue.popleft().events:
                self._submit(events)


log = logging.getLogger("proxy.capture")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AnyEvent])


def encode_events(events: list[Event]) -> bytes | None:
    """`events` as kept with an outbox entry (None: none, or none that can be encoded)."""
    if not events:
        return None
    try:
        return _encoder.encode(events)
    except Exception:  # an event the journal would dead-letter anyway: kept only there
        return None


def decode_events(data: bytes) -> list[Event]:
    """Events `encode_events` kept; [] for bytes it did not write, logged (the events were
    submitted when the entry was answered; only a worker killed before storing them loses them)."""
    try:
        return list(_decoder.decode(data))
    except msgspec.DecodeError as exc:
        log.warning(
            "capture events kept with an outbox entry are unreadable",
            extra={"error": str(exc), "bytes": len(data)},
        )
        return []
