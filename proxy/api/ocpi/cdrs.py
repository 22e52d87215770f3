"""The CDR object (mod_cdrs.asciidoc), sans-IO: a pushed CDR read, checked and fingerprinted.

`parse_cdr` checks what the spec requires of a CDR: every required field, OCPI's types and
lengths (an `address` up to 255 and a `state` up to 45 characters, as the 2.2.1 erratum on
location addresses allows), the enumerations, an end not before the start, a non-credit id of
at most 36 characters and a credit CDR's `credit_reference_id`, and numbers within what a
charging session can be. Tariffs are not read (they price the session; ERE needs its energy).
The CDR is kept with the body as received (the evidence) and the SHA-256 of its canonical
JSON (keys sorted, no whitespace), by which a replay is told from a changed CDR.

Errors: `OcpiError` HTTP 400 for a body that is not JSON, status 2001 naming what is wrong.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.values import (
    Blob5000,
    CiString32,
    CiString36,
    CiString39,
    CiString48,
    CountryCode,
    Id36,
    Id39,
    PartyId,
    String3,
    String10,
    String11,
    String45,
    String255,
    String512,
    as_utc,
    check_number,
    decode,
)

__all__ = [
    "MAX_KWH",
    "AuthMethod",
    "Cdr",
    "CdrToken",
    "ChargingPeriod",
    "Price",
    "ReceivedCdr",
    "SignedData",
    "SignedValue",
    "canonical_digest",
    "parse_cdr",
]

# Bounds no real session passes: a CDR's energy in kWh, its times in hours, any price.
MAX_KWH = Decimal(100_000)
MAX_HOURS = Decimal(100_000)
MAX_PRICE = Decimal(10) ** 9
NORMAL_ID_LENGTH = 36  # a credit CDR's id may be longer (39), to append e.g. "-C"

TokenType = Literal["AD_HOC_USER", "APP_USER", "OTHER", "RFID"]
AuthMethod = Literal["AUTH_REQUEST", "COMMAND", "WHITELIST"]
ConnectorFormat = Literal["SOCKET", "CABLE"]
PowerType = Literal["AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE", "DC"]
ConnectorType = Literal[
    "CHADEMO",
    "CHAOJI",
    "DOMESTIC_A",
    "DOMESTIC_B",
    "DOMESTIC_C",
    "DOMESTIC_D",
    "DOMESTIC_E",
    "DOMESTIC_F",
    "DOMESTIC_G",
    "DOMESTIC_H",
    "DOMESTIC_I",
    "DOMESTIC_J",
    "DOMESTIC_K",
    "DOMESTIC_L",
    "DOMESTIC_M",
    "DOMESTIC_N",
    "DOMESTIC_O",
    "GBT_AC",
    "GBT_DC",
    "IEC_60309_2_single_16",
    "IEC_60309_2_three_16",
    "IEC_60309_2_three_32",
    "IEC_60309_2_three_64",
    "IEC_62196_T1",
    "IEC_62196_T1_COMBO",
    "IEC_62196_T2",
    "IEC_62196_T2_COMBO",
    "IEC_62196_T3A",
    "IEC_62196_T3C",
    "NEMA_5_20",
    "NEMA_6_30",
    "NEMA_6_50",
    "NEMA_10_30",
    "NEMA_10_50",
    "NEMA_14_30",
    "NEMA_14_50",
    "PANTOGRAPH_BOTTOM_UP",
    "PANTOGRAPH_TOP_DOWN",
    "TESLA_R",
    "TESLA_S",
]
CdrDimensionType = Literal[
    "CURRENT",
    "ENERGY",
    "ENERGY_EXPORT",
    "ENERGY_IMPORT",
    "MAX_CURRENT",
    "MIN_CURRENT",
    "MAX_POWER",
    "MIN_POWER",
    "PARKING_TIME",
    "POWER",
    "RESERVATION_TIME",
    "STATE_OF_CHARGE",
    "TIME",
]


class Price(msgspec.Struct):
    excl_vat: Decimal
    incl_vat: Decimal | None = None

    def __post_init__(self) -> None:
        check_number(self.excl_vat, "excl_vat", -MAX_PRICE, MAX_PRICE)
        if self.incl_vat is not None:
            check_number(self.incl_vat, "incl_vat", -MAX_PRICE, MAX_PRICE)


class CdrToken(msgspec.Struct):
    country_code: CountryCode
    party_id: PartyId
    uid: Id36
    type: TokenType
    contract_id: Id36


class GeoLocation(msgspec.Struct):
    latitude: String10
    longitude: String11


class CdrLocation(msgspec.Struct):
    id: Id36
    address: String255
    city: String45
    country: String3
    coordinates: GeoLocation
    evse_uid: Id36
    evse_id: CiString48
    connector_id: Id36
    connector_standard: ConnectorType
    connector_format: ConnectorFormat
    connector_power_type: PowerType
    name: String255 | None = None
    postal_code: String10 | None = None
    state: String45 | None = None


class CdrDimension(msgspec.Struct):
    type: CdrDimensionType
    volume: Decimal

    def __post_init__(self) -> None:
        check_number(self.volume, "volume", -MAX_PRICE, MAX_PRICE)


class ChargingPeriod(msgspec.Struct):
    start_date_time: datetime
    dimensions: list[CdrDimension]
    tariff_id: CiString36 | None = None

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError("dimensions must list at least one dimension")


class SignedValue(msgspec.Struct):
    nature: CiString32
    plain_data: Blob5000
    signed_data: Blob5000


class SignedData(msgspec.Struct):
    encoding_method: CiString36
    signed_values: list[SignedValue]
    encoding_method_version: int | None = None
    public_key: String512 | None = None
    url: String512 | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.signed_values) <= 100:
            raise ValueError("signed_values must list 1 to 100 signed values")


class Cdr(msgspec.Struct):
    country_code: CountryCode
    party_id: PartyId
    id: Id39
    start_date_time: datetime
    end_date_time: datetime
    cdr_token: CdrToken
    auth_method: AuthMethod
    cdr_location: CdrLocation
    currency: String3
    charging_periods: list[ChargingPeriod]
    total_cost: Price
    total_energy: Decimal
    total_time: Decimal
    last_updated: datetime
    session_id: CiString36 | None = None
    authorization_reference: CiString36 | None = None
    meter_id: String255 | None = None
    tariffs: list[Any] | None = None
    signed_data: SignedData | None = None
    total_fixed_cost: Price | None = None
    total_energy_cost: Price | None = None
    total_time_cost: Price | None = None
    total_parking_time: Decimal | None = None
    total_parking_cost: Price | None = None
    total_reservation_cost: Price | None = None
    remark: String255 | None = None
    invoice_reference_id: CiString39 | None = None
    credit: bool | None = None
    credit_reference_id: CiString39 | None = None
    home_charging_compensation: bool | None = None

    def __post_init__(self) -> None:
        check_number(self.total_energy, "total_energy", Decimal(0), MAX_KWH)
        check_number(self.total_time, "total_time", Decimal(0), MAX_HOURS)
        if self.total_parking_time is not None:
            check_number(self.total_parking_time, "total_parking_time", Decimal(0), MAX_HOURS)
        if not self.charging_periods:
            raise ValueError("charging_periods must list at least one charging period")
        if as_utc(self.end_date_time) < as_utc(self.start_date_time):
            raise ValueError("end_date_time must not be before start_date_time")
        if self.credit:
            if not self.credit_reference_id:
                raise ValueError("a credit CDR needs credit_reference_id")
        elif len(self.id) > NORMAL_ID_LENGTH:
            raise ValueError(
                f"id must be at most {NORMAL_ID_LENGTH} characters (but a credit CDR's)"
            )

    @property
    def owner(self) -> tuple[str, str]:
        """(country code, party id) of the CPO owning the CDR, upper case (CiStrings)."""
        return self.country_code.upper(), self.party_id.upper()


@dataclass(frozen=True)
class ReceivedCdr:
    """A pushed CDR: the object, the body exactly as received, and its canonical digest."""

    cdr: Cdr
    text: str
    sha256: str


def canonical_digest(value: Any) -> str:
    """SHA-256 (hex) of `value` as canonical JSON: keys sorted, no whitespace."""
    return hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()


def parse_cdr(body: bytes) -> ReceivedCdr:
    """A pushed CDR (see the module docstring)."""
    cdr = decode(body, Cdr)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OcpiError(
            Status.CLIENT_ERROR, "the request body is not UTF-8", http_status=400
        ) from None
    return ReceivedCdr(cdr, text, canonical_digest(msgspec.json.decode(body)))
