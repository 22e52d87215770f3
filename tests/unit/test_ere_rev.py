"""REV booking export: CSV, XML in our own schema, and the audit pack per EAN."""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import os
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import xmlschema
from lxml import etree  # type: ignore[import-untyped]

from proxy.ere.core import rev_booking
from proxy.ere.core.rev_booking import (
    CSV_COLUMNS,
    NAMESPACE,
    AuditSession,
    RevBookingRow,
    RevExportError,
    RevProvider,
    to_csv,
    to_xml,
    validate_rev_xml,
)
from proxy.ere.jobs import files
from proxy.ere.jobs.rev_export import write_audit_pack

EAN_A = "871687140000000002"
EAN_B = "871234567890123451"
PROVIDER = RevProvider("ERE Proxy B.V.", kvk_number="12345678", nea_account_id="NEA-0042")
ROW_A = RevBookingRow(
    ean=EAN_A,
    kwh=Decimal("1234.567"),
    delivery_start=date(2026, 1, 1),
    delivery_end=date(2026, 12, 31),
    customer_name="Jan de Vries",
    address="Dorpsstraat 1",
    postcode="1234 AB",
    city="Utrecht",
    grid_operator="Stedin",
    mandate_issued_on=date(2025, 12, 15),
    mandate_valid_from=date(2026, 1, 1),
    mandate_valid_until=date(2026, 12, 31),
)
ROW_B = replace(
    ROW_A,
    ean=EAN_B,
    kwh=Decimal("1E+3"),
    delivery_start=date(2026, 3, 15),
    delivery_end=date(2026, 9, 30),
    customer_name='Zoë "Z" O\'Neil & <Zonen>, Ltd',
    address="Kerkweg 12-b",
    postcode="9711AB",
    city="Groningen",
    grid_operator="Enexis",
    mandate_issued_on=date(2026, 3, 1),
    mandate_valid_from=date(2026, 3, 1),
)


def schema_path() -> Path:
    return Path(
        str(importlib.resources.files("proxy.ere.core").joinpath("schemas", "rev-booking-1.xsd"))
    )


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_has_the_documented_columns_plain_decimals_and_iso_dates() -> None:
    assert to_csv([ROW_A, ROW_B]) == (
        "ean,kwh,delivery_start,delivery_end,customer_name,address,postcode,city,grid_operator,"
        "mandate_issued_on,mandate_valid_from,mandate_valid_until,mandate_revoked_at\r\n"
        "871687140000000002,1234.567,2026-01-01,2026-12-31,Jan de Vries,Dorpsstraat 1,1234 AB,Utrecht,"
        "Stedin,2025-12-15,2026-01-01,2026-12-31,\r\n"
        '871234567890123451,1000,2026-03-15,2026-09-30,"Zoë ""Z"" O\'Neil & <Zonen>, Ltd",Kerkweg 12-b,'
        "9711AB,Groningen,Enexis,2026-03-01,2026-03-01,2026-12-31,\r\n"
    )


def test_a_revoked_mandate_says_when_it_was_revoked_in_the_csv_and_the_xml() -> None:
    revoked = replace(
        ROW_B,
        mandate_valid_until=date(2026, 10, 15),
        mandate_revoked_at=datetime(2026, 10, 2, 12, 3, 11, 250000, tzinfo=UTC),
    )
    (row,) = csv.DictReader(io.StringIO(to_csv([revoked]), newline=""))
    assert row["mandate_valid_until"] == "2026-10-15"
    assert row["mandate_revoked_at"] == "2026-10-02T14:03:11+02:00"  # Dutch time
    ns = {"r": NAMESPACE}
    mandate = etree.fromstring(to_xml([ROW_A, revoked], 2026, PROVIDER)).findall(
        "r:Booking/r:Mandate", ns
    )
    assert [m.findtext("r:RevokedAt", namespaces=ns) for m in mandate] == [
        None,
        "2026-10-02T14:03:11+02:00",
    ]
    with pytest.raises(RevExportError, match="does not cover"):
        to_csv([replace(revoked, mandate_valid_until=date(2026, 9, 29))])
    with pytest.raises(TypeError, match="mandate_revoked_at"):
        to_csv([replace(revoked, mandate_revoked_at=datetime(2026, 10, 2, 12))])


def test_csv_reads_back_to_the_same_values() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv([ROW_A, ROW_B]), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [Decimal(r["kwh"]) for r in rows] == [ROW_A.kwh, ROW_B.kwh]
    assert rows[1]["customer_name"] == ROW_B.customer_name
    assert [date.fromisoformat(r["mandate_issued_on"]) for r in rows] == [
        date(2025, 12, 15),
        date(2026, 3, 1),
    ]


@pytest.mark.parametrize("kwh", ["0.000001", "1E+3", "12.3400", "123456789012.5"])
def test_csv_never_writes_an_exponent(kwh: str) -> None:
    cell = to_csv([replace(ROW_A, kwh=Decimal(kwh))]).splitlines()[1].split(",")[1]
    assert "E" not in cell.upper() and Decimal(cell) == Decimal(kwh)


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x")', "+31 6 123", "-1", "@SUM(A1)"])
def test_csv_keeps_spreadsheets_from_running_formulas(name: str) -> None:
    (row,) = csv.DictReader(
        io.StringIO(to_csv([replace(ROW_A, customer_name=name, city=name)]), newline="")
    )
    assert row["customer_name"] == row["city"] == "'" + name


def test_an_empty_csv_has_the_header_only() -> None:
    assert to_csv([]) == ",".join(CSV_COLUMNS) + "\r\n"


# --- XML -----------------------------------------------------------------------------------------


def test_the_schema_ships_inside_the_package() -> None:
    assert (
        importlib.resources.files("proxy.ere.core").joinpath(rev_booking.SCHEMA_RESOURCE).is_file()
    )
    schema = etree.parse(str(schema_path())).getroot()
    assert schema.get("targetNamespace") == NAMESPACE == "urn:ere-proxy:rev-booking:1"


def test_xml_validates_against_our_schema_with_two_validators() -> None:
    document = to_xml([ROW_A, ROW_B], 2026, PROVIDER)

    xmlschema.XMLSchema(str(schema_path())).validate(document.decode("utf-8"))
    libxml2_schema = etree.XMLSchema(etree.parse(str(schema_path())))
    assert libxml2_schema.validate(etree.fromstring(document)), libxml2_schema.error_log


def test_xml_reads_back_to_the_same_values() -> None:
    root = etree.fromstring(to_xml([ROW_A, ROW_B], 2026, PROVIDER))
    ns = {"r": NAMESPACE}

    assert root.tag == f"{{{NAMESPACE}}}RevBookingExport"
    assert (root.get("schemaVersion"), root.get("deliveryYear")) == ("1", "2026")
    assert [
        root.findtext(f"r:Provider/r:{tag}", namespaces=ns)
        for tag in ("Name", "KvkNumber", "NeaAccountId")
    ] == ["ERE Proxy B.V.", "12345678", "NEA-0042"]
    assert root.findtext("r:Summary/r:BookingCount", namespaces=ns) == "2"
    assert Decimal(root.findtext("r:Summary/r:TotalKwh", namespaces=ns)) == Decimal("2234.567")

    bookings = root.findall("r:Booking", ns)
    read_back = [
        RevBookingRow(
            ean=b.findtext("r:Ean", namespaces=ns),
            kwh=Decimal(b.findtext("r:EnergyKwh", namespaces=ns)),
            delivery_start=date.fromisoformat(
                b.findtext("r:DeliveryPeriod/r:Start", namespaces=ns)
            ),
            delivery_end=date.fromisoformat(b.findtext("r:DeliveryPeriod/r:End", namespaces=ns)),
            customer_name=b.findtext("r:Connection/r:CustomerName", namespaces=ns),
            address=b.findtext("r:Connection/r:Address", namespaces=ns),
            postcode=b.findtext("r:Connection/r:Postcode", namespaces=ns),
            city=b.findtext("r:Connection/r:City", namespaces=ns),
            grid_operator=b.findtext("r:Connection/r:GridOperator", namespaces=ns),
            mandate_issued_on=date.fromisoformat(b.findtext("r:Mandate/r:IssuedOn", namespaces=ns)),
            mandate_valid_from=date.fromisoformat(
                b.findtext("r:Mandate/r:ValidFrom", namespaces=ns)
            ),
            mandate_valid_until=date.fromisoformat(
                b.findtext("r:Mandate/r:ValidUntil", namespaces=ns)
            ),
        )
        for b in bookings
    ]
    assert read_back == [ROW_A, ROW_B]
    assert b"1E+3" not in to_xml([ROW_B], 2026, PROVIDER)


def test_optional_provider_fields_may_be_left_out() -> None:
    document = to_xml([ROW_A], 2026, RevProvider("ERE Proxy B.V."))
    assert b"KvkNumber" not in document and b"NeaAccountId" not in document


def test_the_schema_itself_refuses_a_second_booking_for_an_ean() -> None:
    document = to_xml([ROW_A, ROW_B], 2026, PROVIDER).replace(EAN_B.encode(), EAN_A.encode())
    with pytest.raises(RevExportError, match="does not validate"):
        validate_rev_xml(document)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'schemaVersion="1"', b'schemaVersion="2"'),
        (b"<Postcode>1234 AB</Postcode>", b"<Postcode>1234 ab</Postcode>"),
        (b"<EnergyKwh>1234.567</EnergyKwh>", b"<EnergyKwh>0</EnergyKwh>"),
        (b"<City>Utrecht</City>", b"<City> Utrecht</City>"),
        (b"<Start>2026-01-01</Start>", b"<Start>01-01-2026</Start>"),
    ],
)
def test_the_schema_checks_types_and_formats(old: bytes, new: bytes) -> None:
    document = to_xml([ROW_A], 2026, PROVIDER)
    assert old in document
    with pytest.raises(RevExportError, match="does not validate"):
        validate_rev_xml(document.replace(old, new))


def test_kwh_finer_than_a_milliwatt_hour_fails_the_schema() -> None:
    with pytest.raises(RevExportError, match="does not validate"):
        to_xml([replace(ROW_A, kwh=Decimal("1.0000001"))], 2026, PROVIDER)


def test_malformed_documents_are_a_clear_error() -> None:
    with pytest.raises(RevExportError, match="not well-formed"):
        validate_rev_xml(b"<RevBookingExport")
    with pytest.raises(RevExportError, match="not well-formed"):
        validate_rev_xml(b"\xff\xfe")


# --- bad rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ean": "87168714000000000"}, "it must have 18"),
        ({"ean": "87168714000000000X"}, "only digits are allowed"),
        ({"ean": "871687140000000003"}, "fails its check digit"),
        ({"kwh": Decimal("0")}, "more than 0"),
        ({"kwh": Decimal("-1.5")}, "more than 0"),
        ({"kwh": Decimal("NaN")}, "finite"),
        ({"delivery_start": date(2026, 6, 1), "delivery_end": date(2026, 5, 31)}, "runs backwards"),
        ({"mandate_valid_from": date(2026, 2, 1)}, "does not cover"),
        ({"mandate_valid_until": date(2026, 12, 30)}, "does not cover"),
        ({"customer_name": ""}, "non-empty"),
        ({"customer_name": " Jan"}, "surrounding whitespace"),
        ({"address": "Dorpsstraat 1\nBcc"}, "control characters or line breaks"),
        ({"city": "Utrecht\x00"}, "control characters"),
        ({"grid_operator": "x" * 101}, "at most 100"),
        ({"customer_name": "x" * 201}, "at most 200"),
        ({"postcode": "0123 AB"}, "not a Dutch postcode"),
        ({"postcode": "1234 ab"}, "not a Dutch postcode"),
    ],
)
def test_bad_rows_are_refused_by_both_exports(changes: dict[str, object], message: str) -> None:
    bad = replace(ROW_A, **changes)  # type: ignore[arg-type]
    with pytest.raises(RevExportError, match=message):
        to_csv([ROW_B, bad])
    with pytest.raises(RevExportError, match=message):
        to_xml([ROW_B, bad], 2026, PROVIDER)


def test_type_errors_for_floats_and_datetimes() -> None:
    with pytest.raises(TypeError, match="kwh must be a Decimal"):
        to_csv([replace(ROW_A, kwh=1234.567)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="delivery_start must be a date"):
        to_csv([replace(ROW_A, delivery_start=datetime(2026, 1, 1))])


def test_one_row_per_ean() -> None:
    with pytest.raises(RevExportError, match="booked twice"):
        to_csv([ROW_A, replace(ROW_A, kwh=Decimal("1"))])


def test_the_xml_export_is_for_one_delivery_year() -> None:
    with pytest.raises(RevExportError, match="not inside 2027"):
        to_xml([ROW_A], 2027, PROVIDER)
    spanning = replace(
        ROW_A, delivery_end=date(2027, 1, 31), mandate_valid_until=date(2027, 12, 31)
    )
    with pytest.raises(RevExportError, match="not inside 2026"):
        to_xml([spanning], 2026, PROVIDER)
    with pytest.raises(RevExportError, match="no bookings"):
        to_xml([], 2026, PROVIDER)


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (RevProvider(""), "provider name"),
        (RevProvider("ERE", kvk_number="1234567"), "8 digits"),
        (RevProvider("ERE", nea_account_id="x" * 36), "at most 35"),
        (RevProvider("ERE\r\nX"), "line breaks"),
    ],
)
def test_bad_provider_data_is_refused(provider: RevProvider, message: str) -> None:
    with pytest.raises(RevExportError, match=message):
        to_xml([ROW_A], 2026, provider)


# --- audit pack ----------------------------------------------------------------------------------

OCMF = 'OCMF|{"FV":"1.0","GI":"KEBA_KCP30","RD":[{"TM":"2026-01-03T10:03:15,000+0000 I","RV":0.2596}]}|{"SD":"3045"}'
FRAMES = (
    '[2,"1","StartTransaction",{"connectorId":1,"idTag":"ABC","meterStart":1000,"timestamp":"2026-01-03T10:00:00Z"}]',
    '[2,"2","StopTransaction",{"transactionId":7,"meterStop":43370,"reason":"Local \\"quoted\\" \\u00e9 </script>"}]',
)
SESSION = AuditSession(
    session_id="s-1",
    charger_identity="CP-0001",
    transaction_id="7",
    started_at=datetime(2026, 1, 3, 10, 0, tzinfo=UTC),
    stopped_at=datetime(2026, 1, 3, 14, 0, tzinfo=UTC),
    kwh=Decimal("42.370"),
    meter_start_wh=Decimal("1000"),
    meter_stop_wh=Decimal("43370"),
    meter_type="KEBA KC-P30 MID",
    meter_serial_number="17619300",
    signed_meter_data=(OCMF,),
    raw_frames=FRAMES,
)
SECOND_SESSION = replace(
    SESSION,
    session_id="s-2",
    transaction_id=None,
    started_at=datetime(2026, 2, 1, 8, 0, tzinfo=timezone(timedelta(hours=1))),
    stopped_at=datetime(2026, 2, 1, 9, 0, tzinfo=timezone(timedelta(hours=1))),
    kwh=Decimal("7.5"),
    meter_start_wh=None,
    meter_stop_wh=None,
    meter_type=None,
    meter_serial_number=None,
    signed_meter_data=(),
    raw_frames=('[2,"9","TransactionEvent",{"seqNo":0}]',),
)


def test_audit_pack_holds_the_sessions_and_their_evidence_unchanged(tmp_path: Path) -> None:
    path = write_audit_pack(tmp_path / "2026", EAN_A, [SESSION, SECOND_SESSION])

    assert path == tmp_path / "2026" / f"{EAN_A}.json"
    assert os.listdir(tmp_path / "2026") == [f"{EAN_A}.json"]
    pack = json.loads(path.read_text(encoding="utf-8"))
    assert {k: pack[k] for k in ("format", "version", "ean", "session_count", "total_kwh")} == {
        "format": "ere-proxy-audit-pack",
        "version": 1,
        "ean": EAN_A,
        "session_count": 2,
        "total_kwh": "49.870",
    }
    first, second = pack["sessions"]
    assert first == {
        "session_id": "s-1",
        "charger_identity": "CP-0001",
        "transaction_id": "7",
        "started_at": "2026-01-03T10:00:00+00:00",
        "stopped_at": "2026-01-03T14:00:00+00:00",
        "kwh": "42.370",
        "meter_start_wh": "1000",
        "meter_stop_wh": "43370",
        "meter_type": "KEBA KC-P30 MID",
        "meter_serial_number": "17619300",
        "signed_meter_data": [OCMF],
        "raw_frames": list(FRAMES),
    }
    assert second["started_at"] == "2026-02-01T08:00:00+01:00"
    assert (second["transaction_id"], second["meter_start_wh"], second["signed_meter_data"]) == (
        None,
        None,
        [],
    )
    assert [json.loads(frame) for frame in first["raw_frames"]] == [
        json.loads(frame) for frame in FRAMES
    ]


def test_audit_pack_replaces_an_earlier_one(tmp_path: Path) -> None:
    write_audit_pack(tmp_path, EAN_A, [SESSION, SECOND_SESSION])
    write_audit_pack(tmp_path, EAN_A, [SESSION])
    assert json.loads((tmp_path / f"{EAN_A}.json").read_text())["session_count"] == 1
    assert os.listdir(tmp_path) == [f"{EAN_A}.json"]


@pytest.mark.parametrize(
    ("ean", "sessions", "message"),
    [
        ("87168714000000000", [SESSION], "must have 18"),
        ("../../etc/passwd00", [SESSION], "only digits are allowed"),
        (EAN_A, [SESSION, SESSION], "appears twice"),
        (EAN_A, [replace(SESSION, started_at=datetime(2026, 1, 3, 10, 0))], "timezone-aware"),
        (EAN_A, [replace(SESSION, raw_frames=("\ud800",))], "not valid Unicode"),
        (EAN_A, [replace(SESSION, kwh=Decimal("sNaN"))], "finite"),
    ],
)
def test_bad_audit_input_writes_nothing(
    tmp_path: Path, ean: str, sessions: list[AuditSession], message: str
) -> None:
    with pytest.raises(RevExportError, match=message):
        write_audit_pack(tmp_path, ean, sessions)
    assert os.listdir(tmp_path) == []


def test_a_float_energy_in_the_audit_pack_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="kwh must be a Decimal"):
        write_audit_pack(tmp_path, EAN_A, [replace(SESSION, kwh=42.37)])  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_a_failing_audit_write_leaves_the_old_pack_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_audit_pack(tmp_path, EAN_A, [SESSION])
    before = (tmp_path / f"{EAN_A}.json").read_bytes()

    def refuse(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_audit_pack(tmp_path, EAN_A, [SESSION, SECOND_SESSION])

    assert (tmp_path / f"{EAN_A}.json").read_bytes() == before
    assert os.listdir(tmp_path) == [f"{EAN_A}.json"]


def test_a_draft_says_so_in_every_document_and_a_final_export_never_does(tmp_path: Path) -> None:
    draft_xml = to_xml([ROW_A], 2026, PROVIDER, draft=True)
    validate_rev_xml(draft_xml)
    assert etree.fromstring(draft_xml).get("status") == "DRAFT"
    assert etree.fromstring(to_xml([ROW_A], 2026, PROVIDER)).get("status") is None
    draft_rows = list(csv.reader(io.StringIO(to_csv([ROW_A], draft=True))))
    assert draft_rows[0][0] == "DRAFT" and tuple(draft_rows[1]) == CSV_COLUMNS
    assert "DRAFT" not in to_csv([ROW_A])
    draft_pack = json.loads(
        write_audit_pack(tmp_path / "d", EAN_A, [SESSION], draft=True).read_text()
    )
    assert draft_pack["draft"] is True
    assert "draft" not in json.loads(write_audit_pack(tmp_path, EAN_A, [SESSION]).read_text())


def test_the_schema_allows_no_status_but_draft() -> None:
    document = to_xml([ROW_A], 2026, PROVIDER, draft=True).replace(
        b'status="DRAFT"', b'status="FINAL"'
    )
    with pytest.raises(RevExportError, match="status"):
        validate_rev_xml(document)
