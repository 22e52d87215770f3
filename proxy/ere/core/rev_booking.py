"""REV booking export: a delivery year's kWh per EAN for the NEa register, and audit packs.

Once a delivery year is closed its energy is booked in the NEa's register (REV) per connection
(EAN), with the mandate that lets us book it. This module turns those bookings into

* CSV (`to_csv`): one header row, then one row per EAN in the order given, columns as in
  `CSV_COLUMNS`; kWh as plain decimals (never an exponent, as precise as given), dates as ISO
  `YYYY-MM-DD`, the time a mandate was revoked as ISO 8601 in Dutch time with its offset
  (`mandate_revoked_at`, empty for a mandate not revoked), UTF-8 text, RFC 4180 quoting and CRLF
  line ends. A text cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading apostrophe
  so a spreadsheet shows it as text instead of running it as a formula; the XML carries the text
  unchanged.
* XML (`to_xml`) in our own layout, `schemas/rev-booking-1.xsd` (namespace
  `urn:ere-proxy:rev-booking:1`; the NEa does not publish one), validated before it is returned.
  The schema documents every element; it allows kWh to at most 6 decimals (mWh).

* the audit pack (`audit_pack`): one JSON document per EAN with the sessions behind a booking
  and their meter evidence (signed meter data and raw OCPP frames exactly as given).

A revoked mandate is given with its effective end, the last day it still covers, as its end of
validity (`mandate_valid_until`, XML `ValidUntil`) and says when it was revoked (CSV
`mandate_revoked_at`, XML `RevokedAt`).

A draft (`draft=True`, while quarters of the year are still open) says so in every document:
the XML root has `status="DRAFT"`, the CSV starts with a `DRAFT` line before its header, and
the audit pack has `"draft": true`, so a draft is never mistaken for the final export.

All three are pure and return the document; the only file read is the schema, which ships in
this package. Reading the bookings from the database and writing the files is
`proxy.ere.jobs.rev_export`.

Both exports first check every row and refuse the whole export with `RevExportError` naming the
EAN and the field: an EAN that is not 18 digits with a valid GS1 check digit, a second row for
the same EAN, kWh that is not more than zero, a delivery period that runs backwards, leaves the
year (XML) or is not covered by the mandate's validity, and text that is empty, has leading or
trailing whitespace, control characters or line breaks, exceeds its length, or a postcode that
is not Dutch (`1234 AB`). Text is never trimmed or otherwise altered: fix it at the source.
A float where a Decimal belongs is a `TypeError`.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import xmlschema
from lxml import etree

from proxy.ere.core.ean import Ean, EanError
from proxy.ere.core.quarters import DUTCH_TIME

__all__ = [
    "AUDIT_PACK_FORMAT",
    "CSV_COLUMNS",
    "DRAFT",
    "NAMESPACE",
    "SCHEMA_RESOURCE",
    "AuditSession",
    "RevBookingRow",
    "RevExportError",
    "RevProvider",
    "audit_pack",
    "to_csv",
    "to_xml",
    "validate_rev_xml",
]

NAMESPACE = "urn:ere-proxy:rev-booking:1"
SCHEMA_RESOURCE = "schemas/rev-booking-1.xsd"  # inside the `proxy.ere.core` package
AUDIT_PACK_FORMAT = "ere-proxy-audit-pack"
AUDIT_PACK_VERSION = 1
DRAFT = "DRAFT"
DRAFT_NOTE = "not the final REV export: do not submit it to the NEa"

CSV_COLUMNS = (
    "ean",
    "kwh",
    "delivery_start",
    "delivery_end",
    "customer_name",
    "address",
    "postcode",
    "city",
    "grid_operator",
    "mandate_issued_on",
    "mandate_valid_from",
    "mandate_valid_until",
    "mandate_revoked_at",
)

_DATE_FIELDS = (
    "delivery_start",
    "delivery_end",
    "mandate_issued_on",
    "mandate_valid_from",
    "mandate_valid_until",
)
_TEXT_LIMITS = {"customer_name": 200, "address": 200, "city": 100, "grid_operator": 100}
_POSTCODE = re.compile(r"[1-9][0-9]{3} ?[A-Z]{2}")
_KVK = re.compile(r"[0-9]{8}")
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ZERO = Decimal(0)
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class RevExportError(ValueError):
    """Rows, provider data or a document that cannot be exported; the message says which."""


@dataclass(frozen=True, slots=True)
class RevBookingRow:
    """The booking of one EAN for one delivery year, with the mandate behind it.

    `kwh` is a Decimal; the delivery period and the mandate's validity are inclusive dates. For a
    revoked mandate `mandate_valid_until` is the last day it still covers (its effective end) and
    `mandate_revoked_at` when it was revoked (timezone-aware); None for a mandate not revoked.
    """

    ean: str
    kwh: Decimal
    delivery_start: date
    delivery_end: date
    customer_name: str
    address: str
    postcode: str
    city: str
    grid_operator: str
    mandate_issued_on: date
    mandate_valid_from: date
    mandate_valid_until: date
    mandate_revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RevProvider:
    """Us, the ERE provider making the bookings: name, optional KvK number and NEa account."""

    name: str
    kvk_number: str | None = None
    nea_account_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditSession:
    """One charging session behind a booking, with its meter evidence exactly as captured.

    `signed_meter_data` holds the signed meter value texts (OCMF and the like) and `raw_frames`
    the OCPP-J frames, both as received. Times are timezone-aware; energy is Decimal.
    """

    session_id: str
    charger_identity: str
    transaction_id: str | None
    started_at: datetime
    stopped_at: datetime
    kwh: Decimal
    meter_start_wh: Decimal | None
    meter_stop_wh: Decimal | None
    meter_type: str | None
    meter_serial_number: str | None
    signed_meter_data: tuple[str, ...]
    raw_frames: tuple[str, ...]


def to_csv(rows: Sequence[RevBookingRow], *, draft: bool = False) -> str:
    """The bookings as CSV text (see the module docstring for the format; a draft says so first).

    Raises `RevExportError` for a bad row and `TypeError` for a non-Decimal kWh.
    """
    _check_rows(rows, year=None)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if draft:
        writer.writerow([DRAFT, DRAFT_NOTE])
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.ean,
                _plain_decimal(row.kwh),
                row.delivery_start.isoformat(),
                row.delivery_end.isoformat(),
                _spreadsheet_safe(row.customer_name),
                _spreadsheet_safe(row.address),
                row.postcode,
                _spreadsheet_safe(row.city),
                _spreadsheet_safe(row.grid_operator),
                row.mandate_issued_on.isoformat(),
                row.mandate_valid_from.isoformat(),
                row.mandate_valid_until.isoformat(),
                _revoked_at(row) or "",
            ]
        )
    return buffer.getvalue()


def to_xml(
    rows: Sequence[RevBookingRow], year: int, provider: RevProvider, *, draft: bool = False
) -> bytes:
    """The bookings of delivery year `year` as a `rev-booking-1` XML document (UTF-8).

    The document is validated against the schema before it is returned. Raises
    `RevExportError` for a bad row or provider, no rows at all, or a document that fails the
    schema, and `TypeError` for a non-Decimal kWh.
    """
    if not rows:
        raise RevExportError(f"no bookings to export for {year}")
    _check_rows(rows, year=year)
    _check_text(provider.name, "provider name", 200)
    for value, what in (
        (provider.kvk_number, "KvK number"),
        (provider.nea_account_id, "NEa account id"),
    ):
        if value is not None:
            _check_text(value, f"provider {what}", 35)
    if provider.kvk_number is not None and not _KVK.fullmatch(provider.kvk_number):
        raise RevExportError(f"provider KvK number {provider.kvk_number!r} must be 8 digits")

    marks = {"status": DRAFT} if draft else {}
    root = _element("RevBookingExport", schemaVersion="1", deliveryYear=str(year), **marks)
    provider_element = _child(root, "Provider")
    _child(provider_element, "Name", provider.name)
    if provider.kvk_number is not None:
        _child(provider_element, "KvkNumber", provider.kvk_number)
    if provider.nea_account_id is not None:
        _child(provider_element, "NeaAccountId", provider.nea_account_id)
    summary = _child(root, "Summary")
    _child(summary, "BookingCount", str(len(rows)))
    _child(summary, "TotalKwh", _plain_decimal(sum((row.kwh for row in rows), _ZERO)))
    for row in rows:
        booking = _child(root, "Booking")
        _child(booking, "Ean", row.ean)
        _child(booking, "EnergyKwh", _plain_decimal(row.kwh))
        period = _child(booking, "DeliveryPeriod")
        _child(period, "Start", row.delivery_start.isoformat())
        _child(period, "End", row.delivery_end.isoformat())
        connection = _child(booking, "Connection")
        _child(connection, "CustomerName", row.customer_name)
        _child(connection, "Address", row.address)
        _child(connection, "Postcode", row.postcode)
        _child(connection, "City", row.city)
        _child(connection, "GridOperator", row.grid_operator)
        mandate = _child(booking, "Mandate")
        _child(mandate, "IssuedOn", row.mandate_issued_on.isoformat())
        _child(mandate, "ValidFrom", row.mandate_valid_from.isoformat())
        _child(mandate, "ValidUntil", row.mandate_valid_until.isoformat())
        if row.mandate_revoked_at is not None:
            _child(mandate, "RevokedAt", _revoked_at(row))
    document = _XML_DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)
    validate_rev_xml(document)
    return bytes(document)


def validate_rev_xml(document: bytes) -> None:
    """Check a document against `rev-booking-1.xsd`; raise `RevExportError` with the first error."""
    try:
        violation = next(iter(_rev_schema().iter_errors(document.decode("utf-8"))), None)
    except (UnicodeDecodeError, SyntaxError) as error:  # XML parse errors are SyntaxErrors
        raise RevExportError(f"the document is not well-formed UTF-8 XML: {error}") from error
    if violation is not None:
        raise RevExportError(
            f"the document does not validate against rev-booking-1.xsd at {violation.path}: {violation.reason}"
        )


def audit_pack(ean: str, sessions: Sequence[AuditSession], *, draft: bool = False) -> bytes:
    """The audit pack of one EAN: its sessions and their meter evidence, as UTF-8 JSON.

    The JSON holds `format`, `version`, `ean`, `session_count`, `total_kwh` and `sessions` in
    the order given (and `"draft": true` on a draft); Decimals are strings (exact), times ISO 8601 with their offset, evidence
    strings unchanged. Raises `RevExportError` for a bad EAN, a repeated session id, a naive
    time or text that is not valid Unicode, and `TypeError` for a non-Decimal energy.
    """
    _check_ean(ean)
    seen: set[str] = set()
    entries = []
    for session in sessions:
        if session.session_id in seen:
            raise RevExportError(f"EAN {ean}: session {session.session_id!r} appears twice")
        seen.add(session.session_id)
        entries.append(_session_entry(session, ean))
    pack = {
        "format": AUDIT_PACK_FORMAT,
        "version": AUDIT_PACK_VERSION,
        "ean": ean,
        "session_count": len(entries),
        "total_kwh": _plain_decimal(sum((session.kwh for session in sessions), _ZERO)),
        "sessions": entries,
    }
    if draft:
        pack = {"draft": True, "note": DRAFT_NOTE, **pack}
    try:
        return (json.dumps(pack, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    except UnicodeEncodeError as error:
        raise RevExportError(
            f"EAN {ean}: the evidence holds text that is not valid Unicode: {error}"
        ) from error


def _session_entry(session: AuditSession, ean: str) -> dict[str, object]:
    where = f"EAN {ean} session {session.session_id!r}"
    for moment, what in ((session.started_at, "started_at"), (session.stopped_at, "stopped_at")):
        if moment.utcoffset() is None:
            raise RevExportError(f"{where}: {what} must be timezone-aware")
    return {
        "session_id": session.session_id,
        "charger_identity": session.charger_identity,
        "transaction_id": session.transaction_id,
        "started_at": session.started_at.isoformat(),
        "stopped_at": session.stopped_at.isoformat(),
        "kwh": _plain_decimal(_require_decimal(session.kwh, f"{where} kwh")),
        "meter_start_wh": _optional_decimal(session.meter_start_wh, f"{where} meter_start_wh"),
        "meter_stop_wh": _optional_decimal(session.meter_stop_wh, f"{where} meter_stop_wh"),
        "meter_type": session.meter_type,
        "meter_serial_number": session.meter_serial_number,
        "signed_meter_data": list(session.signed_meter_data),
        "raw_frames": list(session.raw_frames),
    }


def _check_rows(rows: Sequence[RevBookingRow], *, year: int | None) -> None:
    seen: set[str] = set()
    for row in rows:
        _check_ean(row.ean)
        where = f"EAN {row.ean}"
        if row.ean in seen:
            raise RevExportError(f"{where}: booked twice; one row per EAN per delivery year")
        seen.add(row.ean)
        kwh = _require_decimal(row.kwh, f"{where} kwh")
        if kwh <= 0:
            raise RevExportError(f"{where}: kwh must be more than 0, got {kwh}")
        for name in _DATE_FIELDS:
            value = getattr(row, name)
            if not isinstance(value, date) or isinstance(value, datetime):
                raise TypeError(
                    f"{where} {name} must be a date, got {type(value).__name__} {value!r}"
                )
        if row.delivery_start > row.delivery_end:
            raise RevExportError(
                f"{where}: delivery period {row.delivery_start}..{row.delivery_end} runs backwards"
            )
        if year is not None and not (row.delivery_start.year == row.delivery_end.year == year):
            raise RevExportError(
                f"{where}: delivery period {row.delivery_start}..{row.delivery_end} is not inside {year}"
            )
        revoked = row.mandate_revoked_at
        if revoked is not None and (
            not isinstance(revoked, datetime) or revoked.utcoffset() is None
        ):
            raise TypeError(
                f"{where} mandate_revoked_at must be a timezone-aware datetime, got {revoked!r}"
            )
        if (
            not row.mandate_valid_from
            <= row.delivery_start
            <= row.delivery_end
            <= row.mandate_valid_until
        ):
            raise RevExportError(
                f"{where}: mandate valid {row.mandate_valid_from}..{row.mandate_valid_until} does not cover "
                f"the delivery period {row.delivery_start}..{row.delivery_end}"
            )
        for name, limit in _TEXT_LIMITS.items():
            _check_text(getattr(row, name), f"{where} {name}", limit)
        if not _POSTCODE.fullmatch(row.postcode):
            raise RevExportError(
                f"{where}: postcode {row.postcode!r} is not a Dutch postcode like '1234 AB'"
            )


def _check_ean(ean: str) -> None:
    """18 digits whose last is the GS1 mod-10 check digit of the first 17."""
    try:
        Ean(ean)
    except EanError as error:
        raise RevExportError(str(error)) from None


def _check_text(value: str, what: str, limit: int) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise RevExportError(
            f"{what} {value!r} must be non-empty text without surrounding whitespace"
        )
    if _UNSAFE_TEXT.search(value):
        raise RevExportError(f"{what} {value!r} contains control characters or line breaks")
    if len(value) > limit:
        raise RevExportError(f"{what} is {len(value)} characters long; at most {limit} are allowed")


def _require_decimal(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise RevExportError(f"{what} must be a finite number, got {value}")
    return value


def _optional_decimal(value: Decimal | None, what: str) -> str | None:
    return None if value is None else _plain_decimal(_require_decimal(value, what))


def _plain_decimal(value: Decimal) -> str:
    """Positional notation, never an exponent: Decimal('1E+3') -> '1000', '-0' -> '0'."""
    text = format(value, "f")
    return text[1:] if text.startswith("-") and not value else text


def _revoked_at(row: RevBookingRow) -> str | None:
    """When the row's mandate was revoked, in Dutch time to the second with its offset."""
    revoked = row.mandate_revoked_at
    return None if revoked is None else revoked.astimezone(DUTCH_TIME).isoformat(timespec="seconds")


def _spreadsheet_safe(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _element(tag: str, **attributes: str) -> etree._Element:
    return etree.Element(f"{{{NAMESPACE}}}{tag}", attrib=attributes, nsmap={None: NAMESPACE})


def _child(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
    if text is not None:
        child.text = text
    return child


@functools.cache
def _rev_schema() -> xmlschema.XMLSchema:
    """Our schema, loaded once from the package data."""
    resource = importlib.resources.files("proxy.ere.core").joinpath(SCHEMA_RESOURCE)
    with importlib.resources.as_file(resource) as schema_path:
        return xmlschema.XMLSchema(str(schema_path))
