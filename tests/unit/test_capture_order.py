"""A connection's capture hands its events over in the order they were made, also when some
wait for their outbox entry to be stored (`Capture.hold`, `Capture.release`)."""

from __future__ import annotations

from proxy.capture.capture import Capture
from proxy.capture.events import Event, StatusChanged
from proxy.capture.tracker import Tracker


def status(event_id: str) -> list[Event]:
    return [StatusChanged(event_id, "CP-1", 1.5, 1, None, "Charging", "NoError", None)]


def submitted_ids(submitted: list[list[Event]]) -> list[str]:
    return [e.event_id for events in submitted for e in events]


def test_events_submitted_while_others_are_held_wait_behind_them():
    submitted: list[list[Event]] = []
    capture = Capture(Tracker("CP-1", "ocpp1.6"), submitted.append)
    first = capture.hold(status("a"))
    capture.submit(status("b"))
    second = capture.hold(status("c"))
    capture.submit(status("d"))
    assert submitted == []
    capture.release(second)  # released out of order: still behind the first
    assert submitted == []
    capture.release(first)
    assert submitted_ids(submitted) == ["a", "b", "c", "d"]
    capture.submit(status("e"))  # nothing held any more: at once
    assert submitted_ids(submitted) == ["a", "b", "c", "d", "e"]


def test_held_events_whose_entry_was_not_stored_are_dropped_and_the_rest_goes_on():
    submitted: list[list[Event]] = []
    capture = Capture(Tracker("CP-1", "ocpp1.6"), submitted.append)
    held = capture.hold(status("a"))
    capture.submit(status("b"))
    capture.release(held, submit=False)
    assert submitted_ids(submitted) == ["b"]
