"""Property tests: any JSON in any action the tracker reads gives events the journal can encode.

Hypothesis writes the payloads: arbitrary JSON (huge and extreme numbers, NUL and every other
character, long strings, nesting, wrong types) and valid OCPP payloads of every tracked action of
OCPP 1.6 and 2.0.1 with parts replaced by such values, as the charger's CALL and as the
back-office's answer (or a CALLERROR). Frames go through the real codec, the tracker, and the
journal's encoding (`proxy.capture.database_store.encode_event`, then read back as the store process
does). Nothing may raise, and every event must encode as itself: the tracker's bounds make a
dead letter unnecessary (a dead letter here would mean a bound is missing). Storing such events
in PostgreSQL is tested in tests/store/test_capture_fuzz.py with the same strategies
(`testkit.tracker_exchanges`).
"""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.capture.database_store import decode_record, encode_event
from testkit.tracker_exchanges import VERSIONS, exchanges, track


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_any_json_in_any_tracked_action_gives_events_the_journal_encodes_as_themselves(data):
    version = data.draw(VERSIONS)
    events = track(version, data.draw(exchanges(version)))
    for event in events:
        record, letter = encode_event(event)
        assert letter is None, letter.error  # a dead letter here means a missing bound
        assert decode_record(record) == event
        msgspec.json.encode(event)  # the session store's body


def test_the_strategies_reach_every_tracked_action_and_both_outcomes():
    """A fixed sample of the fuzz space makes events of every kind and unparseable ones too."""
    kinds: set[str] = set()

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        derandomize=True,  # the same sample every run: the docstring's "fixed"
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        version = data.draw(VERSIONS)
        events = track(version, data.draw(exchanges(version)))
        kinds.update(type(e).__struct_config__.tag for e in events)  # type: ignore[misc]

    collect()
    assert kinds == {
        "charger_booted",
        "status_changed",
        "transaction_started",
        "transaction_stopped",
        "meter_values",
        "transaction_event",
        "unparseable",
    }
