"""The capture events kept with an outbox entry: read back as written, and bytes that are not
such a record (a damaged row) give none, with a warning, instead of ending the relay."""

from __future__ import annotations

import logging

import pytest

from proxy.capture.capture import decode_events, encode_events
from proxy.capture.events import StatusChanged


def test_events_kept_with_an_entry_read_back_as_written():
    events = [StatusChanged("e1", "CP-1", 1.5, 1, None, "Charging", "NoError", None)]
    data = encode_events(events)
    assert data is not None and decode_events(data) == events
    assert encode_events([]) is None


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91\x01", b"\x91\x81\xa4type\xa3bad"])
def test_unreadable_bytes_give_no_events_and_a_warning(data, caplog):
    with caplog.at_level(logging.WARNING, logger="proxy.capture"):
        assert decode_events(data) == []
    assert "unreadable" in caplog.text
