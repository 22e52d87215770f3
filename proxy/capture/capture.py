"""A connection's session capture: its tracker, and the journal its events go to.

Links and relays hand every OCPP message that passed to `from_charger` or `from_upstream`; the
tracker (sans-IO) turns them into events and `submit` hands those over without waiting (see the
journal). Never raises: the tracker turns its own failures into `Unparseable` events.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.capture.events import Event
from proxy.capture.tracker import Tracker
from proxy.wire.codec import Message


class Capture:
    """See the module docstring."""

    __slots__ = ("_submit", "tracker")

    def __init__(self, tracker: Tracker, submit: Callable[[list[Event]], None]) -> None:
        self.tracker = tracker
        self._submit = submit

    def from_charger(self, message: Message, at: float) -> None:
        if events := self.tracker.from_charger(message, at):
            self._submit(events)

    def from_upstream(self, message: Message, at: float) -> None:
        if events := self.tracker.from_upstream(message, at):
            self._submit(events)

    def submit(self, events: list[Event]) -> None:
        """Events the shell made itself (a transaction's real id, say)."""
        self._submit(events)
