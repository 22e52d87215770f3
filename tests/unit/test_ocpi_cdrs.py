"""The CDR object and its session, without I/O: the specification's example and CDRs carrying
real signed OCMF records, read, checked, mapped and weighed by the evidence code OCPP uses."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from proxy.api.ocpi.cdr_sessions import Mapped, Unmapped, cdr_session, signed_record
from proxy.api.ocpi.cdrs import parse_cdr
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.ingest.evidence import weigh
from proxy.ingest.records import check
from testkit.ocmf_records import DZG_EBEE, KEBA, KEBA_KEY, NZR_BRAINPOOL
from testkit.ocpi_samples import base64_key, keba_cdr, signed_cdr, signed_data, spec_cdr

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def raw(cdr: Any) -> bytes:
    return json.dumps(cdr).encode()


def refusal(cdr: Any) -> OcpiError:
    with pytest.raises(OcpiError) as caught:
        parse_cdr(raw(cdr))
    return caught.value


def mapped(cdr: dict[str, Any]) -> Mapped:
    result = cdr_session(parse_cdr(raw(cdr)).cdr, "acme")
    assert isinstance(result, Mapped)
    return result


def test_the_spec_example_reads_as_it_is_written():
    received = parse_cdr(raw(spec_cdr()))
    cdr = received.cdr
    assert (cdr.country_code, cdr.party_id, cdr.id) == ("BE", "BEC", "12345")
    assert cdr.total_energy == Decimal("15.342") and cdr.total_time == Decimal("1.973")
    assert cdr.cdr_location.evse_uid == "3256" and cdr.cdr_token.uid == "012345678"
    assert cdr.total_cost.incl_vat == Decimal("4.4")
    assert json.loads(received.text) == spec_cdr()


def test_the_fingerprint_is_of_the_content_not_its_form():
    first = parse_cdr(raw(spec_cdr()))
    spaced = parse_cdr(json.dumps(spec_cdr(), indent=4, sort_keys=True).encode())
    assert spaced.sha256 == first.sha256 and spaced.text != first.text
    assert parse_cdr(raw(spec_cdr(total_energy=15.343))).sha256 != first.sha256


REQUIRED = (
    "country_code",
    "party_id",
    "id",
    "start_date_time",
    "end_date_time",
    "cdr_token",
    "auth_method",
    "cdr_location",
    "currency",
    "charging_periods",
    "total_cost",
    "total_energy",
    "total_time",
    "last_updated",
)


@pytest.mark.parametrize("field", REQUIRED)
def test_every_required_field_is_required(field):
    cdr = spec_cdr()
    del cdr[field]
    error = refusal(cdr)
    assert (error.status, error.http_status) == (Status.INVALID_PARAMETERS, 200)
    assert field in error.message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"id": "x" * 37}, "id"),
        ({"id": "x" * 37, "credit": True, "credit_reference_id": "x"}, None),
        ({"credit": True}, "credit_reference_id"),
        ({"country_code": "B"}, "country_code"),
        ({"party_id": "BE-C"}, "party_id"),
        ({"session_id": "s\tid"}, "session_id"),
        ({"currency": "EURO"}, "currency"),
        ({"auth_method": "whitelist"}, "auth_method"),
        ({"total_energy": -0.1}, "total_energy"),
        ({"total_energy": 100_001}, "total_energy"),
        ({"total_time": "NaN"}, "total_time"),
        ({"total_parking_time": -1}, "total_parking_time"),
        ({"end_date_time": "2015-06-29T21:39:08Z"}, "end_date_time"),
        ({"last_updated": "29-06-2015"}, "last_updated"),
        ({"charging_periods": []}, "charging_periods"),
        (
            {"charging_periods": [{"start_date_time": "2015-06-29T21:39:09Z", "dimensions": []}]},
            "dimensions",
        ),
        ({"total_cost": {"incl_vat": 1}}, "excl_vat"),
        ({"remark": "x" * 256}, "remark"),
        ({"signed_data": {"encoding_method": "OCMF", "signed_values": []}}, "signed_values"),
        (
            {"signed_data": {"encoding_method": "OCMF", "signed_values": [{"nature": "End"}]}},
            "plain_data",
        ),
    ],
)
def test_what_breaks_the_spec_is_refused_naming_the_field(change, named):
    if named is None:
        assert parse_cdr(raw(spec_cdr(**change))).cdr.credit
        return
    error = refusal(spec_cdr(**change))
    assert error.status == Status.INVALID_PARAMETERS and named in error.message, error.message


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ({"evse_uid": "x" * 37}, "evse_uid"),
        ({"evse_id": "é"}, "evse_id"),
        ({"connector_standard": "TYPE2"}, "connector_standard"),
        ({"connector_format": "socket"}, "connector_format"),
        ({"connector_power_type": "AC"}, "connector_power_type"),
        ({"coordinates": {"latitude": "3.729944"}}, "longitude"),
        ({"city": "x" * 46}, "city"),
    ],
)
def test_the_location_is_checked_too(location, named):
    cdr = spec_cdr()
    cdr["cdr_location"] |= location
    assert named in refusal(cdr).message


def test_the_erratum_lengths_of_an_address_are_allowed():
    cdr = spec_cdr()
    cdr["cdr_location"] |= {"address": "x" * 255, "state": "y" * 45}
    assert parse_cdr(raw(cdr)).cdr.cdr_location.state == "y" * 45


def test_what_the_spec_leaves_open_is_accepted():
    cdr = spec_cdr(
        start_date_time="2015-06-29T21:39:09",  # no zone: UTC
        end_date_time="2015-06-29T23:37:32.123Z",
        future_field={"anything": [1, 2]},
        tariffs=[{"not": "a tariff we read"}],
    )
    session = mapped(cdr).session
    assert session.started_at == datetime(2015, 6, 29, 21, 39, 9, tzinfo=UTC)
    assert session.stopped_at == datetime(2015, 6, 29, 23, 37, 32, 123000, tzinfo=UTC)


@pytest.mark.parametrize("body", [b"", b"{", b"\xff", b'{"a": 1e999999}', b"[" * 5000])
def test_a_body_that_is_not_json_is_an_http_error(body):
    with pytest.raises(OcpiError) as caught:
        parse_cdr(body)
    assert caught.value.http_status in (200, 400)
    if body in (b"", b"{", b"\xff"):
        assert (caught.value.http_status, caught.value.status) == (400, Status.CLIENT_ERROR)


def test_an_unsigned_cdr_is_a_reported_session_of_its_evse():
    session = mapped(spec_cdr(session_id="S-1")).session
    assert (session.source, session.source_ref, session.partner_id) == (
        "ocpi",
        "BE/BEC/12345",
        "acme",
    )
    assert (session.identity, session.transaction_id) == ("3256", "S-1")
    assert session.energy_wh == Decimal("15342.000") and session.signed_data is None
    check(session, NOW)  # the session records' own rules hold


def test_the_source_ref_ignores_case():
    upper = mapped(spec_cdr(id="ab-1")).session.source_ref
    assert upper == mapped(spec_cdr(id="AB-1", party_id="bec")).session.source_ref == "BE/BEC/AB-1"


def test_credit_cdrs_and_reservations_are_no_sessions():
    credit = spec_cdr(id="12345-C", credit=True, credit_reference_id="12345")
    assert isinstance(cdr_session(parse_cdr(raw(credit)).cdr, "acme"), Unmapped)
    reservation = spec_cdr()
    reservation["cdr_location"]["evse_uid"] = "#NA"
    result = cdr_session(parse_cdr(raw(reservation)).cdr, "acme")
    assert isinstance(result, Unmapped) and "reservation" in result.reason


def test_a_signed_cdr_carries_its_record_and_key_to_the_evidence_code():
    session = mapped(signed_cdr()).session
    assert session.energy_wh == Decimal("1304.000")
    check(session, NOW)
    evidence = weigh(session.signed_data, pinned_key=None, meter_type=None, meter_serial=None)
    assert evidence.meter_class == "signed-verified"
    assert (evidence.signed_start_wh, evidence.signed_stop_wh) == (
        Decimal("0.0"),
        Decimal("1304.000"),
    )


def test_a_pinned_key_outweighs_the_key_sent_with_the_cdr():
    session = mapped(signed_cdr()).session
    other = weigh(session.signed_data, pinned_key=KEBA_KEY, meter_type=None, meter_serial=None)
    assert other.meter_class == "signed-unverified"


@pytest.mark.parametrize(
    ("cdr", "meter_class"),
    [
        (keba_cdr(), "signed-verified"),
        (keba_cdr(tampered=True), "signed-unverified"),
        (signed_cdr(with_key=False), "signed-unverified"),
    ],
)
def test_signed_records_are_weighed_as_ocpp_ones(cdr, meter_class):
    session = mapped(cdr).session
    assert (
        weigh(session.signed_data, pinned_key=None, meter_type=None, meter_serial=None).meter_class
        == meter_class
    )


def test_the_plain_data_serves_when_the_signed_data_is_not_base64():
    cdr = keba_cdr()
    cdr["signed_data"]["signed_values"][0]["signed_data"] = "not base64 at all!"
    session = mapped(cdr).session
    assert (
        weigh(session.signed_data, pinned_key=None, meter_type=None, meter_serial=None).meter_class
        == "signed-verified"
    )


def _values(*values: tuple[str, str]) -> dict[str, Any]:
    data = signed_data(KEBA, KEBA_KEY)
    data["signed_values"] = [
        {
            "nature": nature,
            "plain_data": ocmf,
            "signed_data": base64.b64encode(ocmf.encode()).decode(),
        }
        for nature, ocmf in values
    ]
    return data


def test_of_several_signed_values_the_complete_one_is_weighed():
    cdr = keba_cdr()
    cdr["signed_data"] = _values(
        ("Start", NZR_BRAINPOOL), ("End", KEBA), ("Intermediate", DZG_EBEE)
    )
    signed, notes = signed_record(parse_cdr(raw(cdr)).cdr.signed_data)
    assert signed is not None and json.loads(signed)["publicKey"] == base64_key(KEBA_KEY)
    assert base64.b64decode(json.loads(signed)["signedMeterData"]).decode() == KEBA
    assert notes == ("of 3 signed values, the 'End' one weighed",)
    cdr["signed_data"] = _values(("End", DZG_EBEE), ("Start", NZR_BRAINPOOL))
    signed, _ = signed_record(parse_cdr(raw(cdr)).cdr.signed_data)
    assert base64.b64decode(json.loads(signed or "")["signedMeterData"]).decode() == DZG_EBEE


def test_signed_data_that_cannot_be_checked_is_noted_and_unverified():
    cdr = keba_cdr()
    cdr["signed_data"]["encoding_method"] = "Alfen Eichrecht"
    result = mapped(cdr)
    assert result.notes == ("signed data in 'Alfen Eichrecht': only OCMF can be checked",)
    evidence = weigh(
        result.session.signed_data, pinned_key=None, meter_type=None, meter_serial=None
    )
    assert evidence.meter_class == "signed-unverified" and "not OCMF" in evidence.detail
    cdr = keba_cdr()
    cdr["signed_data"]["signed_values"][0] |= {"signed_data": "garbage", "plain_data": "more"}
    assert mapped(cdr).notes == ("no signed value reads as OCMF",)
