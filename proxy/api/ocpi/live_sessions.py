"""The Session object (mod_sessions.asciidoc), sans-IO: a PUT read and a PATCH applied.

A platform PUTs a Session at `{country_code}/{party_id}/{session_id}` and PATCHes it as it goes
on. `parse_session` reads a PUT's object: the spec's fields, types and lengths (tariffs and
prices are read as numbers, never used), ids that match the URL. `apply_patch` applies a PATCH
to the object kept: it must carry `last_updated`; the fields it names replace the kept ones,
but `charging_periods`, which are added to the kept list; the ids cannot change; the result
must still be a valid Session. A session's charging periods are bounded (`MAX_PERIODS`), so
PATCHes cannot grow it without end.

Errors: `OcpiError` HTTP 400 for a body that is not JSON, status 2001 naming what is wrong.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from proxy.api.ocpi.cdrs import MAX_KWH, AuthMethod, CdrToken, ChargingPeriod, Price
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.values import (
    CiString36,
    CountryCode,
    Id36,
    PartyId,
    String3,
    String255,
    as_utc,
    check_number,
    decode,
)

__all__ = ["MAX_PERIODS", "KeptSession", "Session", "apply_patch", "parse_session"]

MAX_PERIODS = 2_000

SessionStatus = Literal["ACTIVE", "COMPLETED", "INVALID", "PENDING", "RESERVATION"]


class Session(msgspec.Struct):
    country_code: CountryCode
    party_id: PartyId
    id: Id36
    start_date_time: datetime
    kwh: Decimal
    cdr_token: CdrToken
    auth_method: AuthMethod
    location_id: Id36
    evse_uid: Id36
    connector_id: Id36
    currency: String3
    status: SessionStatus
    last_updated: datetime
    end_date_time: datetime | None = None
    authorization_reference: CiString36 | None = None
    meter_id: String255 | None = None
    charging_periods: list[ChargingPeriod] | None = None
    total_cost: Price | None = None

    def __post_init__(self) -> None:
        check_number(self.kwh, "kwh", Decimal(0), MAX_KWH)
        if len(self.charging_periods or ()) > MAX_PERIODS:
            raise ValueError(f"a session keeps at most {MAX_PERIODS} charging periods")

    def key(self) -> tuple[str, str, str]:
        """(country code, party id, id), upper case (CiStrings)."""
        return self.country_code.upper(), self.party_id.upper(), self.id.upper()


class KeptSession(msgspec.Struct):
    """A Session as kept: the object and its JSON text."""

    session: Session
    text: str

    @property
    def last_updated(self) -> datetime:
        return as_utc(self.session.last_updated)


def _matches(session: Session, country_code: str, party_id: str, session_id: str) -> None:
    if session.key() != (country_code.upper(), party_id.upper(), session_id.upper()):
        raise OcpiError(
            Status.INVALID_PARAMETERS,
            "country_code, party_id and id of the Session must be those of the URL",
        )


def parse_session(body: bytes, country_code: str, party_id: str, session_id: str) -> KeptSession:
    """The Session of a PUT to `country_code/party_id/session_id`."""
    session = decode(body, Session)
    _matches(session, country_code, party_id, session_id)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OcpiError(
            Status.CLIENT_ERROR, "the request body is not UTF-8", http_status=400
        ) from None
    return KeptSession(session, text)


def apply_patch(
    kept: str, body: bytes, country_code: str, party_id: str, session_id: str
) -> KeptSession:
    """The kept Session (JSON text) with the PATCH `body` applied (see the module docstring)."""
    patch = decode(body, dict[str, Any])
    if "last_updated" not in patch:
        raise OcpiError(Status.INVALID_PARAMETERS, "a PATCH must carry last_updated")
    merged: dict[str, Any] = msgspec.json.decode(kept)
    for name, value in patch.items():
        if name == "charging_periods":
            if isinstance(value, list):
                merged["charging_periods"] = [*(merged.get("charging_periods") or []), *value]
            elif value is not None:
                raise OcpiError(Status.INVALID_PARAMETERS, "charging_periods: expected an array")
        else:
            merged[name] = value
    text = msgspec.json.encode(merged)
    session = decode(text, Session)
    _matches(session, country_code, party_id, session_id)
    return KeptSession(session, text.decode())
