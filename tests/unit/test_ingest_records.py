"""The rules a supplied session must meet, the evidence it carries, and the rules between the
sessions of one batch: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from proxy.capture.evidence import MeterClass
from proxy.ingest.batch_checks import check_batch
from proxy.ingest.evidence import weigh
from proxy.ingest.records import RecordError, check, fingerprint
from testkit.ocmf_records import KEBA, KEBA_KEY, KEBA_TAMPERED
from testkit.session_files import START, external

NOW = START + timedelta(days=30)


def refusal(**fields) -> tuple[str, str]:
    with pytest.raises(RecordError) as caught:
        check(external(**fields), NOW)
    return caught.value.field, caught.value.detail


def test_a_valid_record_passes_and_its_fingerprint_ignores_form_but_not_content():
    check(external(), NOW)
    same = external(
        started_at=START.astimezone(timezone(timedelta(hours=1))),
        energy_wh=Decimal("7500.000"),
        source_ref="another id",
    )
    assert fingerprint(same) == fingerprint(external())
    assert fingerprint(external(energy_wh=Decimal(7501))) != fingerprint(external())
    assert fingerprint(external(signed_data="OCMF|{}|{}")) != fingerprint(external())


@pytest.mark.parametrize(
    ("fields", "field", "detail"),
    [
        ({"source": "ocpp"}, "source", "must be one of ocpi, api, csv"),
        ({"source_ref": ""}, "source_ref", "1 to 255"),
        ({"source_ref": "x" * 256}, "source_ref", "1 to 255"),
        ({"source_ref": "a\x00b"}, "source_ref", "control"),
        ({"transaction_id": "tx\u202e"}, "transaction_id", "control"),
        ({"identity": "a:b"}, "identity", "':'"),
        ({"identity": "x" * 49}, "identity", "1 to 48"),
        ({"started_at": datetime(2026, 3, 2, 8)}, "started_at", "no time zone"),
        ({"started_at": datetime(1999, 12, 31, tzinfo=UTC)}, "started_at", "before 2000"),
        ({"stopped_at": START}, "stopped_at", "after started_at"),
        ({"stopped_at": START - timedelta(seconds=1)}, "stopped_at", "after started_at"),
        (
            {"started_at": NOW, "stopped_at": NOW + timedelta(minutes=6)},
            "stopped_at",
            "in the future",
        ),
        ({"energy_wh": Decimal("NaN")}, "energy_wh", "finite"),
        ({"energy_wh": Decimal("-1")}, "energy_wh", "negative"),
        ({"energy_wh": 7500}, "energy_wh", "finite number"),
        ({"energy_wh": Decimal("1e-9")}, "energy_wh", "6 decimals"),
        ({"meter_start_wh": Decimal("1e40")}, "meter_start_wh", "15 digits"),
        # Two hours at 1 MW is 2,000 kWh; 7,500 kWh given in Wh is a thousand times that.
        (
            {"energy_wh": Decimal(7_500_000), "meter_start_wh": None},
            "energy_wh",
            "Wh where kWh is expected",
        ),
        ({"energy_wh": Decimal(7500), "meter_stop_wh": Decimal(1_007_502)}, "energy_wh", "differs"),
        (
            {"meter_start_wh": Decimal(1_007_500), "meter_stop_wh": Decimal(1_000_000)},
            "meter_stop_wh",
            "went backwards",
        ),
        ({"signed_data": "x" * 200_000}, "signed_data", "longer than"),
        ({"signed_data": "OCMF\x00"}, "signed_data", "NUL"),
    ],
)
def test_each_rule_names_its_field(fields, field, detail):
    found = refusal(**fields)
    assert found[0] == field and detail in found[1], found


def test_energy_within_a_watt_hour_of_the_meter_and_without_meter_readings_passes():
    check(external(meter_stop_wh=Decimal("1007500.9")), NOW)
    check(external(meter_start_wh=None, meter_stop_wh=None), NOW)
    check(external(meter_start_wh=Decimal(5), meter_stop_wh=None), NOW)
    check(external(energy_wh=Decimal(0), meter_stop_wh=Decimal(1_000_000)), NOW)


def test_a_huge_exponent_is_refused_without_being_written_out():
    field, detail = refusal(energy_wh=Decimal("1e999999999"))
    assert field == "energy_wh" and len(detail) < 200


def test_evidence_of_a_session_without_signed_data_is_the_chargers_boot_facts():
    declared = weigh(None, pinned_key=None, meter_type="Iskra WM3M4C", meter_serial="S1")
    assert declared.meter_class is MeterClass.DECLARED
    unknown = weigh(None, pinned_key=None, meter_type="Iskra WM3M4C", meter_serial=None)
    assert unknown.meter_class is MeterClass.UNKNOWN and "no MID meter" in unknown.detail


def test_signed_data_verifies_with_the_pinned_key_and_gives_the_signed_readings():
    verified = weigh(KEBA, pinned_key=KEBA_KEY, meter_type=None, meter_serial=None)
    assert verified.meter_class is MeterClass.SIGNED_VERIFIED
    assert "verifies with the charger's pinned key" in verified.detail
    assert (verified.signed_start_wh, verified.signed_stop_wh) == (
        Decimal("259.6"),
        Decimal("259.7"),
    )
    tampered = weigh(KEBA_TAMPERED, pinned_key=KEBA_KEY, meter_type=None, meter_serial=None)
    assert tampered.meter_class is MeterClass.SIGNED_UNVERIFIED
    assert "does not verify" in tampered.detail


def test_signed_data_without_a_key_or_unreadable_is_unverified_with_the_reason():
    keyless = weigh(KEBA, pinned_key=None, meter_type=None, meter_serial=None)
    assert keyless.meter_class is MeterClass.SIGNED_UNVERIFIED and "no key" in keyless.detail
    sent_along = (
        '{"signedMeterData": "' + KEBA.replace('"', '\\"') + '", "publicKey": "' + KEBA_KEY + '"}'
    )
    alongside = weigh(sent_along, pinned_key=None, meter_type=None, meter_serial=None)
    assert alongside.meter_class is MeterClass.SIGNED_VERIFIED
    assert "sent with the data" in alongside.detail
    garbage = weigh("=HYPERLINK(1)", pinned_key=KEBA_KEY, meter_type=None, meter_serial=None)
    assert garbage.meter_class is MeterClass.SIGNED_UNVERIFIED
    assert garbage.detail.startswith("signed data unreadable")


def test_a_batch_names_repeats_contradictions_same_events_overlaps_and_meters_backwards():
    hour = timedelta(hours=1)
    sessions = [
        external(source_ref="a"),  # 0: 08:00-10:00, meter 1,000,000 → 1,007,500
        external(source_ref="a"),  # 1: a repeat
        external(source_ref="a", energy_wh=Decimal(7000), meter_stop_wh=Decimal(1_007_000)),
        external(
            source_ref="b",
            started_at=START + hour,
            stopped_at=START + 3 * hour,
            energy_wh=Decimal(3000),
            meter_start_wh=None,
            meter_stop_wh=None,
        ),
        external(
            source_ref="c",
            started_at=START + 5 * hour,
            stopped_at=START + 6 * hour,
            meter_start_wh=Decimal(1_007_000),
            meter_stop_wh=Decimal(1_014_500),
        ),
        external(source_ref="d", energy_wh=Decimal(7520), meter_start_wh=None, meter_stop_wh=None),
        external(source_ref="e", identity="CP-B"),  # another charger: fine
    ]
    found = {p.position: (p.other, p.field, p.detail) for p in check_batch(sessions)}
    assert found[1] == (0, "source_ref", "repeats {other}")
    assert found[2] == (0, "source_ref", "has the same id as {other}, with other content")
    assert found[3][0:2] == (0, "started_at") and "overlaps" in found[3][2]
    assert found[4][0:2] == (0, "meter_start_wh") and "went backwards" in found[4][2]
    assert found[5][0] == 0 and "same charging event" in found[5][2]
    assert set(found) == {1, 2, 3, 4, 5}


def test_back_to_back_sessions_and_a_meter_that_carries_on_are_fine():
    hour = timedelta(hours=1)
    second = external(
        source_ref="2",
        started_at=START + 2 * hour,
        stopped_at=START + 4 * hour,
        meter_start_wh=Decimal(1_007_500),
        meter_stop_wh=Decimal(1_015_000),
    )
    assert check_batch([second, external(source_ref="1")]) == []
