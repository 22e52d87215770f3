"""Eligibility of one session: each reason on a record that differs from an eligible one in one
respect, the V2G deduction, mandates by Dutch date, overlaps, and inputs that are refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ere.core.ean import Ean
from proxy.ere.core.eligibility import (
    READING_MARGIN_WH,
    Assessment,
    ChargerLink,
    Eligibility,
    EligibilityInputError,
    Mandate,
    MeterClass,
    Reason,
    SessionContext,
    SessionRecord,
    SessionStatus,
    assess,
)

D = Decimal
UTC = UTC
T0 = datetime(2026, 8, 20, 16, 0, tzinfo=UTC)  # 18:00 in Amsterdam
EAN = Ean("871687120000000004")
OTHER_EAN = Ean("000004006381333931")
LINK = ChargerLink("cust-1", EAN)
WHOLE_YEAR = Mandate("cust-1", EAN, date(2026, 1, 1), date(2026, 12, 31))


def record(**changes: Any) -> SessionRecord:
    """A completed, declared-MID session: 20 kWh from 18:00 to 20:00 Dutch time on 20 August."""
    fields: dict[str, Any] = {
        "session_id": 1,
        "identity": "CP-1",
        "transaction_id": "101",
        "connector_id": 1,
        "started_at": T0,
        "stopped_at": T0 + timedelta(hours=2),
        "meter_start_wh": D(1000),
        "meter_stop_wh": D(21000),
        "last_reading_at": T0 + timedelta(hours=1),
        "last_reading_wh": D(11000),
        "energy_wh": D(20000),
        "meter_class": "declared",
        "status": "completed",
    }
    fields.update(changes)
    return SessionRecord(**fields)


def context(**changes: Any) -> SessionContext:
    fields: dict[str, Any] = {"link": LINK, "max_power_w": D(11000), "mandates": (WHOLE_YEAR,)}
    fields.update(changes)
    return SessionContext(**fields)


def verdict(session: SessionRecord, around: SessionContext | None = None) -> Assessment:
    return assess(session, around if around is not None else context())


def test_eligible_session_counts_its_energy_in_kwh() -> None:
    result = verdict(record())
    assert result.eligible and result.eligibility is Eligibility.ELIGIBLE
    assert result.reason is Reason.ELIGIBLE
    assert result.kwh == D("20")  # 20000 Wh / 1000
    assert (result.customer_id, result.ean, result.ended_at) == (
        "cust-1",
        EAN,
        T0 + timedelta(hours=2),
    )
    assert result.session_id == 1


def test_energy_fed_back_is_deducted() -> None:
    # 20000 Wh imported − 4500 Wh exported = 15500 Wh = 15.5 kWh
    result = verdict(record(exported_wh=D(4500)))
    assert result.eligible and result.kwh == D("15.5")
    assert "4.5 kWh fed back" in result.detail


def test_a_session_that_fed_back_more_than_it_took_counts_negative() -> None:
    # 2000 Wh imported − 5000 Wh exported = −3 kWh, deducted from the customer's other sessions
    result = verdict(
        record(
            energy_wh=D(2000), meter_stop_wh=D(3000), last_reading_wh=D(2000), exported_wh=D(5000)
        )
    )
    assert result.eligible and result.kwh == D("-3")


def test_fractional_watt_hours_stay_exact() -> None:
    # Signed readings in kWh with four decimals give tenths of Wh: 12345.6 Wh = 12.3456 kWh
    assert verdict(record(energy_wh=D("12345.6"))).kwh == D("12.3456")


def test_orphan_with_a_final_reading_counts_up_to_that_reading() -> None:
    orphan = record(status="orphaned", stopped_at=None, meter_stop_wh=None, energy_wh=D(10000))
    result = verdict(orphan)
    assert result.eligible and result.kwh == D("10")
    assert result.ended_at == T0 + timedelta(hours=1)  # its last reading time


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"status": "active"}, Reason.NOT_FINISHED, "active"),
        ({"status": "rejected"}, Reason.REJECTED, "rejected"),
        (
            {
                "status": "orphaned",
                "stopped_at": None,
                "meter_stop_wh": None,
                "last_reading_wh": None,
                "last_reading_at": None,
                "energy_wh": None,
            },
            Reason.ORPHANED_WITHOUT_FINAL_READING,
            "no energy register reading",
        ),
        ({"started_at": None}, Reason.INCOMPLETE_RECORD, "no start time"),
        ({"energy_wh": None}, Reason.INCOMPLETE_RECORD, "no energy"),
        (
            {"stopped_at": T0 - timedelta(minutes=1)},
            Reason.ENDS_BEFORE_START,
            "ends 2026-08-20T15:59",
        ),
        (
            {"meter_stop_wh": D(900)},
            Reason.METER_WENT_BACKWARDS,
            "meter stop 900 Wh is below meter start 1000 Wh",
        ),
        (
            {"last_reading_wh": D(999)},
            Reason.METER_WENT_BACKWARDS,
            "last reading 999 Wh is below meter start",
        ),
        (
            {"meter_stop_wh": D(10000)},
            Reason.METER_WENT_BACKWARDS,
            "below an earlier reading of 11000 Wh",
        ),
        (
            {
                "energy_wh": D(-5),
                "meter_start_wh": None,
                "meter_stop_wh": None,
                "last_reading_wh": None,
            },
            Reason.NEGATIVE_ENERGY,
            "imported energy -5 Wh",
        ),
        ({"exported_wh": D(-1)}, Reason.NEGATIVE_ENERGY, "exported energy -1 Wh"),
        ({"meter_class": "unknown"}, Reason.NO_MID_EVIDENCE, "meter class is unknown"),
        ({"meter_class": "signed-unverified"}, Reason.NO_MID_EVIDENCE, "signed-unverified"),
    ],
)
def test_each_record_problem_has_its_reason(
    changes: dict[str, Any], reason: Reason, detail: str
) -> None:
    result = verdict(record(**changes))
    assert result.eligibility is Eligibility.INELIGIBLE
    assert result.reason is reason
    assert detail in result.detail
    assert result.kwh == 0


def test_a_later_stop_still_counts_when_the_last_reading_came_after_it() -> None:
    # A MeterValues frame queued offline may arrive with a time after the stop: not backwards.
    late_sample = record(last_reading_at=T0 + timedelta(hours=3), last_reading_wh=D(21000))
    assert verdict(late_sample).eligible


@pytest.mark.parametrize("meter_class", [MeterClass.SIGNED_VERIFIED, MeterClass.DECLARED])
def test_mid_evidence_is_a_verified_signature_or_a_declared_mid_meter(
    meter_class: MeterClass,
) -> None:
    assert verdict(record(meter_class=meter_class)).eligible


def test_charger_without_customer_or_without_ean() -> None:
    unlinked = verdict(record(), context(link=None, mandates=()))
    assert (unlinked.reason, unlinked.customer_id) == (Reason.NOT_LINKED, None)
    no_ean = verdict(record(), context(link=ChargerLink("cust-1", None), mandates=()))
    assert no_ean.reason is Reason.NO_EAN
    assert no_ean.customer_id == "cust-1"
    assert "cust-1" in no_ean.detail


def test_no_mandate_at_all() -> None:
    result = verdict(record(), context(mandates=()))
    assert result.reason is Reason.NO_VALID_MANDATE
    assert result.detail == "no mandate covers 2026-08-20"


def test_mandate_starting_mid_quarter_counts_from_its_first_dutch_day() -> None:
    from_15_august = Mandate("cust-1", EAN, date(2026, 8, 15), date(2026, 12, 31))
    around = context(mandates=(from_15_august,))
    before = record(
        started_at=datetime(2026, 8, 14, 19, 0, tzinfo=UTC),
        stopped_at=datetime(2026, 8, 14, 21, 30, tzinfo=UTC),
    )
    # 21:30 UTC on 14 August is 23:30 in Amsterdam: still 14 August, before the mandate.
    result = verdict(before, around)
    assert result.reason is Reason.NO_VALID_MANDATE
    assert result.detail == "no mandate covers 2026-08-14 (mandates: 2026-08-15 to 2026-12-31)"
    # 22:30 UTC on 14 August is 00:30 on 15 August in Amsterdam: covered.
    after_midnight = replace(before, stopped_at=datetime(2026, 8, 14, 22, 30, tzinfo=UTC))
    assert verdict(after_midnight, around).eligible


def test_mandate_of_another_customer_does_not_count() -> None:
    theirs = Mandate("cust-2", EAN, date(2026, 1, 1), date(2026, 12, 31))
    result = verdict(record(), context(mandates=(theirs,)))
    assert result.reason is Reason.NO_VALID_MANDATE
    assert "customer cust-2's" in result.detail


def test_mandates_of_two_customers_on_one_day_conflict() -> None:
    theirs = Mandate("cust-2", EAN, date(2026, 8, 1), date(2026, 12, 31))
    result = verdict(record(), context(mandates=(WHOLE_YEAR, theirs)))
    assert result.reason is Reason.MANDATE_CONFLICT
    assert "cust-1, cust-2" in result.detail


def test_energy_above_maximum_power_over_the_duration() -> None:
    # 11 kW for 1 hour allows 11000 Wh, plus the 100 Wh margin: 11100 Wh at most.
    one_hour = {
        "stopped_at": T0 + timedelta(hours=1),
        "last_reading_at": T0 + timedelta(minutes=30),
    }
    at_limit = record(**one_hour, energy_wh=D(11100), meter_stop_wh=D(12100))
    assert verdict(at_limit).eligible
    over = record(**one_hour, energy_wh=D("11100.1"), meter_stop_wh=D("12100.1"))
    result = verdict(over)
    assert result.reason is Reason.EXCEEDS_MAX_POWER
    assert (
        result.detail == "11.1001 kWh imported in 1:00:00; 11000 W allows 11 kWh (+100 Wh margin)"
    )
    fed_back = record(
        **one_hour,
        energy_wh=D(5000),
        meter_stop_wh=D(6000),
        last_reading_wh=D(3000),
        exported_wh=D(12000),
    )
    assert verdict(fed_back).reason is Reason.EXCEEDS_MAX_POWER
    assert D(100) == READING_MARGIN_WH


def other(session_id: int, start: datetime, end: datetime | None, **changes: Any) -> SessionRecord:
    return record(
        session_id=session_id,
        transaction_id=str(100 + session_id),
        started_at=start,
        stopped_at=end,
        last_reading_at=None,
        last_reading_wh=None,
        **changes,
    )


def test_overlapping_sessions_on_one_connector_are_both_ineligible() -> None:
    mine = record()  # 16:00–18:00 UTC
    theirs = other(2, T0 + timedelta(hours=1), T0 + timedelta(hours=3))
    result = verdict(mine, context(same_connector=(mine, theirs)))
    assert result.reason is Reason.OVERLAPS_OTHER_SESSION
    assert "transaction 102 (session 2)" in result.detail
    assert (
        verdict(theirs, context(same_connector=(mine, theirs))).reason
        is Reason.OVERLAPS_OTHER_SESSION
    )


@pytest.mark.parametrize(
    ("start", "end", "changes", "overlaps"),
    [
        (T0 + timedelta(hours=2), T0 + timedelta(hours=3), {}, False),  # starts as mine stops
        (T0 - timedelta(hours=1), T0, {}, False),  # stops as mine starts
        (T0 - timedelta(hours=1), T0 + timedelta(seconds=1), {}, True),
        (T0 + timedelta(minutes=30), T0 + timedelta(minutes=40), {"status": "rejected"}, False),
        (
            T0 + timedelta(minutes=30),
            None,
            {"status": "active", "meter_stop_wh": None},
            True,
        ),  # an instant inside
        (T0 - timedelta(minutes=30), None, {"status": "active", "meter_stop_wh": None}, False),
    ],
)
def test_overlap_is_judged_on_half_open_intervals(
    start: datetime, end: datetime | None, changes: dict[str, Any], overlaps: bool
) -> None:
    result = verdict(record(), context(same_connector=(other(2, start, end, **changes),)))
    assert (result.reason is Reason.OVERLAPS_OTHER_SESSION) == overlaps
    assert result.eligible == (not overlaps)


def test_context_that_belongs_to_another_session_is_refused() -> None:
    with pytest.raises(
        EligibilityInputError, match="a mandate for EAN 000004006381333931 was given for EAN"
    ):
        verdict(
            record(),
            context(mandates=(Mandate("cust-1", OTHER_EAN, date(2026, 1, 1), date(2026, 12, 31)),)),
        )
    elsewhere = replace(other(2, T0, T0 + timedelta(hours=1)), connector_id=2)
    with pytest.raises(EligibilityInputError, match="session 2 is on another connector"):
        verdict(record(), context(same_connector=(elsewhere,)))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: record(energy_wh=20000.0), TypeError, "energy_wh must be a Decimal, got float"),
        (
            lambda: record(started_at=datetime(2026, 8, 20, 18, 0)),
            EligibilityInputError,
            "started_at .* has no time zone",
        ),
        (
            lambda: record(meter_class="mid"),
            EligibilityInputError,
            "'mid' is not a valid MeterClass",
        ),
        (
            lambda: record(status="done"),
            EligibilityInputError,
            "'done' is not a valid SessionStatus",
        ),
        (lambda: context(max_power_w=D(0)), EligibilityInputError, "max_power_w must be positive"),
        (
            lambda: Mandate("c", EAN, date(2026, 5, 1), date(2026, 4, 30)),
            EligibilityInputError,
            "ends .* before it starts",
        ),
        (
            lambda: Mandate("c", EAN, date(2026, 5, 1), date(2027, 4, 30)),
            EligibilityInputError,
            "one calendar year",
        ),
    ],
)
def test_malformed_inputs_raise_clear_errors(
    build: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()


def test_status_and_meter_class_accept_column_strings() -> None:
    session = record(status="completed", meter_class="signed-verified")
    assert session.status is SessionStatus.COMPLETED
    assert session.meter_class is MeterClass.SIGNED_VERIFIED


def test_every_reason_has_its_own_text() -> None:
    texts = [reason.text for reason in Reason]
    assert all(texts) and len(set(texts)) == len(texts)


@given(
    energy=st.integers(0, 60_000).map(D),
    exported=st.integers(0, 60_000).map(D),
    minutes=st.integers(0, 300),
)
def test_property_eligible_kwh_is_import_minus_export_within_the_power_limit(
    energy: Decimal, exported: Decimal, minutes: int
) -> None:
    session = record(
        stopped_at=T0 + timedelta(minutes=minutes),
        last_reading_at=T0,
        last_reading_wh=D(1000),
        energy_wh=energy,
        meter_stop_wh=D(1000) + energy,
        exported_wh=exported,
    )
    result = verdict(session)
    limit_wh = D(11000) * minutes / 60 + READING_MARGIN_WH
    within = energy <= limit_wh and exported <= limit_wh
    assert result.eligible == within
    assert result.kwh == ((energy - exported) / 1000 if within else 0)
    assert verdict(session) == result


def test_the_max_power_margin_is_the_closes_rule_and_named_in_the_detail() -> None:
    one_hour = {"stopped_at": T0 + timedelta(hours=1), "last_reading_at": T0}
    session = record(
        **one_hour, energy_wh=D(11050), meter_stop_wh=D(12050), last_reading_wh=D(1000)
    )
    assert verdict(session).eligible  # 11 kWh allowed, 50 Wh above it: inside the default 100 Wh
    strict = verdict(session, context(margin_wh=D(0)))
    assert strict.reason is Reason.EXCEEDS_MAX_POWER
    assert strict.detail == "11.05 kWh imported in 1:00:00; 11000 W allows 11 kWh (+0 Wh margin)"
    with pytest.raises(EligibilityInputError, match="margin_wh"):
        context(margin_wh=D(-1))


def test_a_charger_clock_ahead_of_the_arrival_of_its_frames_is_flagged() -> None:
    arrived = T0 - timedelta(minutes=10)  # the start frame arrived 10 minutes before its stamp
    result = verdict(record(start_received_at=arrived, stop_received_at=T0 + timedelta(hours=2)))
    assert result.reason is Reason.CHARGER_CLOCK and not result.eligible and result.kwh == 0
    assert result.detail.startswith("start stamped 2026-08-20T16:00:00+00:00, 0:10:00 after")
    assert result.customer_id == "cust-1"  # still attributed, so the exclusion shows per customer
    within = verdict(record(start_received_at=T0 - timedelta(minutes=4)))
    assert within.eligible  # 4 minutes ahead is inside the default 5


def test_a_stamp_older_than_an_offline_queue_is_kept_is_flagged_and_a_queue_is_not() -> None:
    queued = record(
        start_received_at=T0 + timedelta(days=3), stop_received_at=T0 + timedelta(days=3)
    )
    assert verdict(queued).eligible  # sent three days later from the charger's offline queue
    replayed = record(stop_received_at=T0 + timedelta(days=40))
    result = verdict(replayed)
    assert result.reason is Reason.CHARGER_CLOCK
    assert result.detail.startswith("stop stamped 2026-08-20T18:00:00+00:00 arrived 39 days")
    tolerant = verdict(replayed, context(max_clock_lag=timedelta(days=60)))
    assert tolerant.eligible
    assert verdict(record()).eligible  # no receive times (captured before they were kept)
