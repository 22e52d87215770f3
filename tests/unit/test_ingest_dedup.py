"""The rule deciding that two sessions are the same charging event, and which one counts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from proxy.ingest.dedup import Charge, find_duplicates, rank, same_event

T0 = datetime(2026, 5, 1, 18, tzinfo=UTC)
HOUR = timedelta(hours=1)


def charge(session_id: int, source: str = "csv", **fields) -> Charge:
    values = {
        "identity": "CP-1",
        "started_at": T0,
        "stopped_at": T0 + 2 * HOUR,
        "energy_wh": Decimal(20_000),
        "meter_class": "declared",
    }
    return Charge(session_id, source=source, **(values | fields))


def test_same_charger_overlapping_time_and_energy_within_tolerance_is_one_event():
    ocpp = charge(1, "ocpp")
    assert same_event(ocpp, charge(2, started_at=T0 + HOUR, stopped_at=T0 + 3 * HOUR))
    # 0.5 % of the larger figure, at least 100 Wh: 20,100 is 0.4975 % of 20,100 over 20,000.
    assert same_event(ocpp, charge(2, energy_wh=Decimal(20_100)))
    assert not same_event(ocpp, charge(2, energy_wh=Decimal(20_101)))  # 101 > 100.505
    big = charge(1, "ocpp", energy_wh=Decimal(60_000))
    assert same_event(big, charge(2, energy_wh=Decimal(60_300)))  # 300 <= 301.5
    assert not same_event(big, charge(2, energy_wh=Decimal(60_400)))
    small = charge(1, "ocpp", energy_wh=Decimal(500))
    assert same_event(small, charge(2, energy_wh=Decimal(600)))


def test_other_charger_no_overlap_or_two_ocpp_sessions_are_not_one_event():
    ocpp = charge(1, "ocpp")
    assert not same_event(ocpp, charge(2, identity="CP-2"))
    assert not same_event(ocpp, charge(2, started_at=T0 + 2 * HOUR, stopped_at=T0 + 3 * HOUR))
    assert not same_event(ocpp, charge(2, "ocpp"))
    # Two supplied sessions can be one event (one export imported under two names).
    assert same_event(charge(1, "csv"), charge(2, "csv"))
    # Zero-length sessions at the same start overlap.
    instant = {"stopped_at": T0}
    assert same_event(charge(1, "api", **instant), charge(2, "csv", **instant))


def test_ocpp_is_kept_first_then_signed_then_the_earliest():
    ocpp = charge(9, "ocpp", meter_class="unknown")
    verified = charge(5, "ocpi", meter_class="signed-verified")
    unverified = charge(4, "ocpi", meter_class="signed-unverified")
    plain = charge(2, "csv")
    earlier_plain = charge(1, "api")
    ordered = sorted([plain, verified, ocpp, earlier_plain, unverified], key=rank)
    assert ordered == [ocpp, verified, unverified, earlier_plain, plain]
    found = find_duplicates([plain, verified, ocpp, earlier_plain, unverified])
    assert found == {5: 9, 4: 9, 1: 9, 2: 9}
    assert find_duplicates([plain, verified, earlier_plain]) == {2: 5, 1: 5}


def test_a_chain_of_overlaps_marks_only_true_twins():
    # 1 (ocpp) overlaps 2 (csv, same energy) and 2 overlaps 3 (csv, other energy): only 2 is a
    # duplicate; 3 is another event (the close's overlap rule speaks to it).
    first = charge(1, "ocpp")
    twin = charge(2, started_at=T0 + HOUR, stopped_at=T0 + 3 * HOUR)
    other = Charge(3, "CP-1", "csv", T0 + 2.5 * HOUR, T0 + 4 * HOUR, Decimal(5000), "declared")
    assert find_duplicates([other, twin, first]) == {2: 1}


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=60), st.randoms())
def test_every_event_keeps_exactly_one_session_however_the_input_is_ordered(starts, rng):
    charges = []
    for n, start in enumerate(starts):
        source = "ocpp" if n % 5 == 0 else random.Random(n).choice(["csv", "api", "ocpi"])
        charges.append(
            charge(
                n + 1,
                source,
                started_at=T0 + start * HOUR,
                stopped_at=T0 + (start + 1) * HOUR,
                meter_class=random.Random(n).choice(["declared", "signed-verified"]),
            )
        )
    shuffled = list(charges)
    rng.shuffle(shuffled)
    found = find_duplicates(charges)
    assert find_duplicates(shuffled) == found
    kept = {c.session_id for c in charges} - set(found)
    by_id = {c.session_id: c for c in charges}
    for duplicate, keeper in found.items():
        assert keeper in kept
        assert same_event(by_id[duplicate], by_id[keeper])
        assert rank(by_id[keeper]) < rank(by_id[duplicate])
    for a in kept:  # no two kept sessions are one event
        for b in kept:
            assert a == b or not same_event(by_id[a], by_id[b])
