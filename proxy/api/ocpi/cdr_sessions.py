"""A CDR as the session it stands for (`proxy.ingest.ExternalSession`), sans-IO.

The mapping (README "OCPI"):

* source `ocpi`, `source_ref` `<COUNTRY>/<PARTY>/<CDR ID>` (upper case: CiStrings), the
  partner whose platform pushed it;
* the charger is the CDR's `cdr_location.evse_uid`: the CPO's technical EVSE id, which it should
  set to the charger's OCPP identity where it has one (it then names the same charger as the
  proxy's sessions and the partner's links and grants);
* the transaction is the OCPI `session_id`; start and end are `start_date_time` and
  `end_date_time`; the energy is `total_energy` (kWh) in Wh, to the mWh;
* `signed_data` with encoding `OCMF` (`signed_record`): the signed value whose OCMF record reads
  (its `signed_data`, base64 of the OCMF text, else its `plain_data`) with a begin and an end
  reading, else the one of nature `End`, else the last that reads, handed over with the
  SignedData's `public_key` as a SignedMeterValue object, so that the same evidence code as for
  OCPP weighs it (`proxy.ingest.evidence`). Data that does not read (another encoding) is handed
  over all the same and makes the session signed-unverified; the other values are noted.

No session is made of a credit CDR (it reverses another CDR; its energy is that CDR's) nor of a
reservation that never became a charging session (`evse_uid` `#NA`): `Unmapped` says why, and
the CDR is kept all the same. Whether the session is taken (a rule of `proxy.ingest.records`,
the partner's charger) is `record_sessions`' call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from proxy.api.ocpi.cdrs import Cdr, SignedData
from proxy.api.ocpi.values import as_utc
from proxy.capture.evidence import EvidenceError, SignedMeterData, parse_signed_meter_value
from proxy.ingest.records import ExternalSession, RecordError

__all__ = [
    "NOT_AVAILABLE",
    "Mapped",
    "Unmapped",
    "cdr_session",
    "refusal",
    "signed_record",
    "source_ref",
]

SOURCE = "ocpi"
NOT_AVAILABLE = "#NA"  # OCPI's value for a required field that cannot be filled
_END_EVENTS = frozenset("ELRAP")  # OCMF TX values that end a transaction
_MWH = Decimal("0.001")
# The CDR's field behind each field of the session, to say what a session rule refused.
_CDR_FIELDS = {
    "identity": "cdr_location.evse_uid",
    "transaction_id": "session_id",
    "started_at": "start_date_time",
    "stopped_at": "end_date_time",
    "energy_wh": "total_energy (in Wh)",
    "signed_data": "signed_data",
    "source_ref": "id",
}


@dataclass(frozen=True)
class Mapped:
    """The session a CDR stands for, and what the mapping noted."""

    session: ExternalSession
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unmapped:
    """Why a CDR stands for no session."""

    reason: str


def source_ref(cdr: Cdr) -> str:
    """The CDR's id among the partner's OCPI sessions."""
    return "/".join(part.upper() for part in (cdr.country_code, cdr.party_id, cdr.id))


def _envelope(data: str, encoding: str, key: str | None) -> str:
    value = {"signedMeterData": data, "encodingMethod": encoding}
    if key:
        value["publicKey"] = key
    return json.dumps(value, separators=(",", ":"))


def _complete(data: SignedMeterData) -> bool:
    events = {r.event for r in data.record.readings if r.wh is not None}
    return "B" in events and bool(events & _END_EVENTS)


def signed_record(signed: SignedData | None) -> tuple[str | None, tuple[str, ...]]:
    """The signed meter data to weigh of a CDR's `signed_data`, and notes (module docstring)."""
    if signed is None:
        return None, ()
    key = (signed.public_key or "").strip() or None
    encoding = signed.encoding_method.strip()
    first = signed.signed_values[0]
    if encoding.upper() != "OCMF":
        note = f"signed data in {encoding[:36]!r}: only OCMF can be checked"
        return _envelope(first.signed_data, encoding, key), (note,)
    readable: list[tuple[str, str, SignedMeterData]] = []
    for value in signed.signed_values:
        for text in (value.signed_data, value.plain_data):
            envelope = _envelope(text, "OCMF", key)
            try:
                readable.append((value.nature, envelope, parse_signed_meter_value(envelope)))
            except EvidenceError:
                continue
            break
    if not readable:
        return _envelope(first.signed_data, "OCMF", key), ("no signed value reads as OCMF",)
    chosen = next((r for r in readable if _complete(r[2])), None)
    chosen = chosen or next((r for r in readable if r[0].lower() == "end"), readable[-1])
    notes: tuple[str, ...] = ()
    if len(signed.signed_values) > 1:
        notes = (f"of {len(signed.signed_values)} signed values, the {chosen[0]!r} one weighed",)
    return chosen[1], notes


def cdr_session(cdr: Cdr, partner_id: str) -> Mapped | Unmapped:
    """The session `cdr` stands for, or why it stands for none."""
    if cdr.credit:
        return Unmapped(f"a credit CDR of {cdr.credit_reference_id}: no session of its own")
    if cdr.cdr_location.evse_uid == NOT_AVAILABLE:
        return Unmapped("a reservation that never became a charging session (evse_uid #NA)")
    signed_data, notes = signed_record(cdr.signed_data)
    session = ExternalSession(
        source=SOURCE,
        source_ref=source_ref(cdr),
        partner_id=partner_id,
        identity=cdr.cdr_location.evse_uid,
        transaction_id=cdr.session_id or None,
        started_at=as_utc(cdr.start_date_time),
        stopped_at=as_utc(cdr.end_date_time),
        energy_wh=(cdr.total_energy * 1000).quantize(_MWH),
        signed_data=signed_data,
    )
    return Mapped(session, notes)


def refusal(error: RecordError) -> str:
    """A session rule's refusal, naming the CDR's field."""
    return f"{_CDR_FIELDS.get(error.field, error.field)}: {error.detail}"
