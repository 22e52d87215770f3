"""OCMF records, raw or in a SignedMeterValue object: parsed, bounded, never trusted.

`parse_ocmf` reads `OCMF|{payload}|{signature}` into an `OcmfRecord` (readings as exact
`Decimal`, energy in Wh); `parse_signed_meter_value` unwraps what OCPP carries around it. Bad
input of any kind raises `EvidenceError` with a readable `reason`, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

# Longest OCMF text accepted. OCPP 2.1 allows 32768 base64 characters of signedMeterData, so
# real records stay well below this; anything longer is rejected before any parsing.
MAX_OCMF_CHARS = 64 * 1024
# A SignedMeterValue object carries the OCMF text (base64) plus a key and a few names.
MAX_ENVELOPE_CHARS = 2 * MAX_OCMF_CHARS
MAX_KEY_CHARS = 8 * 1024
# Highest believable energy register: 10 GWh. A home charger's meter shows at most a few
# hundred MWh in its lifetime; more is a unit or encoding error.
MAX_WH = Decimal(10) ** 10
# Readings with more significant digits, or finer than a nano-unit, are not meter readings.
MAX_DIGITS = 20
MIN_EXPONENT = -9
# Longest BootNotification meterType matched against the MID list. OCPP 1.6 allows 25
# characters (CiString25); a longer one is matched by nothing rather than scanned.
MAX_METER_TYPE_CHARS = 100

DEFAULT_ALGORITHM = "ECDSA-secp256r1-SHA256"  # OCMF default since version 0.4

_ENERGY_UNITS = {
    "kWh": 1000,
    "KWh": 1000,
    "kwh": 1000,
    "KWH": 1000,
    "Wh": 1,
    "wh": 1,
    "WH": 1,
}
# Other units a record may legitimately carry: cable resistance (OCMF table 20) and durations
# ("sec" appears in real records of the S.A.F.E. transparency software's test data).
_OTHER_UNITS = {"mOhm", "uOhm", "s", "sec"}
_TX_EVENTS = frozenset("BCXELRAPST")
_METER_STATES = frozenset("NGTDRMXIOSEF")
_TIME_STATES = frozenset("UISR")

_TM = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[,.]([0-9]{1,6}))?(Z|[+-][0-9]{2}:?[0-9]{2})(?: ([A-Z]))?",
    re.ASCII,
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
_ALGORITHM = re.compile(r"ECDSA-([A-Za-z0-9]+)-SHA256", re.ASCII)
_WHITESPACE = re.compile(r"\s+")


class EvidenceError(ValueError):
    """Input that cannot serve as meter evidence; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Curves of OCMF table 22 ("Predefined Signature Algorithms"); None: not offered by the
# cryptography package, so such records cannot be checked here.
_CURVES: dict[str, type[ec.EllipticCurve] | None] = {
    "secp192k1": None,
    "secp256k1": ec.SECP256K1,
    "secp192r1": ec.SECP192R1,
    "secp256r1": ec.SECP256R1,
    "brainpool256r1": ec.BrainpoolP256R1,
    "secp384r1": ec.SECP384R1,
    "brainpool384r1": ec.BrainpoolP384R1,
}


def _curve_for(algorithm: str) -> type[ec.EllipticCurve]:
    match = _ALGORITHM.fullmatch(algorithm.strip())
    name = match.group(1).lower() if match else ""
    # "brainpoolP256r1" (RFC 5639 spelling, seen in real records) equals OCMF's "brainpool256r1".
    name = name.replace("brainpoolp", "brainpool")
    if name not in _CURVES:
        raise EvidenceError(f"unknown signature algorithm {algorithm[:64]!r}")
    curve = _CURVES[name]
    if curve is None:
        raise EvidenceError(f"signature algorithm {algorithm!r} is not supported here")
    return curve


def _known_algorithm(algorithm: str) -> bool:
    try:
        _curve_for(algorithm)
    except EvidenceError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Reading:
    """One entry of an OCMF `RD` list, with values the spec lets it omit filled in.

    `value` is `RV` exactly as written; `wh` is the same quantity in Wh when `unit` is an
    energy unit and None otherwise (or when the entry only reports a meter event).
    """

    time: datetime | None
    time_status: str | None  # U unsynchronised, I informative, S synchronised, R relative
    event: str | None  # TX: B begin, C charging, E/L/R/A/P end, X error, S suspended, T tariff
    value: Decimal | None
    unit: str | None
    wh: Decimal | None
    obis: str | None
    current_type: str | None
    error_flags: str
    status: str | None

    @property
    def billable(self) -> bool:
        """True for an energy reading the meter itself marks as good (state G, no E flag)."""
        return self.wh is not None and self.status == "G" and "E" not in self.error_flags


@dataclass(frozen=True, slots=True)
class OcmfRecord:
    """A parsed OCMF record. `payload` is the signed section verbatim, as the meter signed it."""

    payload: str
    format_version: str | None
    gateway_id: str | None
    gateway_serial: str | None
    gateway_version: str | None
    pagination: str | None
    meter_vendor: str | None
    meter_model: str | None
    meter_serial: str | None
    meter_firmware: str | None
    identified: bool | None
    identification_level: str | None
    identification_flags: tuple[str, ...]
    identification_type: str | None
    identification_data: str | None
    charge_point_type: str | None
    charge_point_id: str | None
    readings: tuple[Reading, ...]
    signature_algorithm: str | None  # SA as sent; None means the OCMF default
    signature: bytes

    @property
    def algorithm(self) -> str:
        return self.signature_algorithm or DEFAULT_ALGORITHM


@dataclass(frozen=True, slots=True)
class SignedMeterData:
    """An OCMF record as delivered over OCPP, with the key and method names sent alongside.

    `public_key` is the key text exactly as sent (base64, hex or PEM); a key that arrives with
    the data proves nothing about who signed it, so `classify` only trusts keys it is given.
    """

    record: OcmfRecord
    public_key: str | None
    signing_method: str | None
    encoding_method: str


# --------------------------------------------------------------------------- OCMF parsing


def parse_ocmf(text: str | bytes) -> OcmfRecord:
    """Parse `OCMF|{payload}|{signature}`; raise `EvidenceError` saying what is wrong."""
    if isinstance(text, bytes):
        if len(text) > MAX_OCMF_CHARS * 4:
            raise EvidenceError(f"OCMF text is longer than {MAX_OCMF_CHARS} characters")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise EvidenceError("OCMF text is not valid UTF-8") from None
    if not isinstance(text, str):
        raise EvidenceError(f"OCMF text must be a string, not {type(text).__name__}")
    if len(text) > MAX_OCMF_CHARS:
        raise EvidenceError(f"OCMF text is longer than {MAX_OCMF_CHARS} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EvidenceError("OCMF text is not valid Unicode") from None
    sections = text.strip().split("|")
    if len(sections) != 3:
        raise EvidenceError(
            f"OCMF text must have three '|'-separated sections, found {len(sections)}"
        )
    header, payload_text, signature_text = sections
    if header != "OCMF":
        raise EvidenceError(f"OCMF header must be 'OCMF', found {header[:20]!r}")
    payload = _json_object(payload_text, "OCMF payload")
    signature_section = _json_object(signature_text, "OCMF signature section")

    algorithm = _opt_str(signature_section, "SA", 64)
    return OcmfRecord(
        payload=payload_text,
        format_version=_opt_str(payload, "FV"),
        gateway_id=_opt_str(payload, "GI"),
        gateway_serial=_opt_str(payload, "GS"),
        gateway_version=_opt_str(payload, "GV"),
        pagination=_opt_str(payload, "PG"),
        meter_vendor=_opt_str(payload, "MV"),
        meter_model=_opt_str(payload, "MM"),
        meter_serial=_opt_str(payload, "MS"),
        meter_firmware=_opt_str(payload, "MF"),
        identified=_opt_bool(payload, "IS"),
        identification_level=_opt_str(payload, "IL"),
        identification_flags=_str_list(payload, "IF"),
        identification_type=_opt_str(payload, "IT"),
        identification_data=_opt_str(payload, "ID"),
        charge_point_type=_opt_str(payload, "CT"),
        charge_point_id=_opt_str(payload, "CI"),
        readings=_readings(payload.get("RD")),
        signature_algorithm=algorithm or None,
        signature=_signature_bytes(signature_section),
    )


def _reject_constant(name: str) -> Any:
    raise EvidenceError(f"JSON number {name} is not a meter value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Two values for one key would let a reader and a verifier see different data.
        raise EvidenceError("JSON object has a duplicate key")
    return obj


def _decimal(text: str) -> Decimal:
    """A JSON number or numeric string as a Decimal. An exponent beyond Decimal's range
    (about 10**18 either way) raises `EvidenceError`, not Decimal's InvalidOperation."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise EvidenceError(f"number {text[:30]} is out of range") from None


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            text,
            parse_float=_decimal,
            parse_int=_decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except EvidenceError as exc:
        raise EvidenceError(f"{what}: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise EvidenceError(f"{what} is not valid JSON ({exc.msg} at {exc.pos})") from None
    except RecursionError:
        raise EvidenceError(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise EvidenceError(f"{what} must be a JSON object")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, limit: int = 1024) -> str | None:
    """A string field; numbers are accepted as their text (some chargers send "FV": 1.0)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, Decimal):
        value = str(value)
    if not isinstance(value, str):
        raise EvidenceError(f"field {key} must be a string")
    if len(value) > limit:
        raise EvidenceError(f"field {key} is longer than {limit} characters")
    return value


def _opt_bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise EvidenceError(f"field {key} must be true or false")


def _str_list(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise EvidenceError(f"field {key} must be a list of strings")
    return tuple(value)


def _readings(raw: Any) -> tuple[Reading, ...]:
    if raw is None:
        raise EvidenceError("OCMF payload has no readings (RD)")
    if not isinstance(raw, list) or not raw:
        raise EvidenceError("OCMF readings (RD) must be a non-empty list")
    # OCMF omits a field that equals the one of the previous reading, so carry them forward.
    carried: dict[str, Any] = {}
    readings = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise EvidenceError(f"reading {index} must be a JSON object")
        try:
            readings.append(_reading(entry, carried))
        except EvidenceError as exc:
            raise EvidenceError(f"reading {index}: {exc.reason}") from None
    return tuple(readings)


def _reading(entry: Mapping[str, Any], carried: dict[str, Any]) -> Reading:
    for key in ("TM", "TX", "RI", "RU", "RT", "EF", "ST"):
        if key in entry:
            carried[key] = _opt_str(entry, key, 64)
    time, time_status = _time(carried.get("TM"))
    event = carried.get("TX")
    if event is not None and event not in _TX_EVENTS:
        raise EvidenceError(f"unknown transaction event TX={event!r}")
    status = carried.get("ST")
    if status is not None and status not in _METER_STATES:
        raise EvidenceError(f"unknown meter state ST={status!r}")
    value = _value(entry.get("RV")) if "RV" in entry else None
    unit = carried.get("RU")
    wh = None
    if value is not None:
        if unit is None:
            raise EvidenceError("reading has a value but no unit (RU)")
        if unit in _ENERGY_UNITS:
            wh = value * _ENERGY_UNITS[unit]
            if wh > MAX_WH:
                raise EvidenceError(f"energy reading {value} {unit} is beyond any meter")
        elif unit not in _OTHER_UNITS:
            raise EvidenceError(f"unsupported unit RU={unit[:20]!r}")
    return Reading(
        time=time,
        time_status=time_status,
        event=event,
        value=value,
        unit=unit,
        wh=wh,
        obis=carried.get("RI"),
        current_type=carried.get("RT"),
        error_flags=carried.get("EF") or "",
        status=status,
    )


def _value(raw: Any) -> Decimal:
    """RV as a Decimal: a JSON number, or a numeric string as some chargers send."""
    if isinstance(raw, str):
        text = raw.strip()
        if not _NUMBER.fullmatch(text):
            raise EvidenceError(f"reading value RV={raw[:30]!r} is not a number")
        raw = _decimal(text)
    if not isinstance(raw, Decimal):
        raise EvidenceError("reading value RV must be a number")
    if not raw.is_finite():
        raise EvidenceError("reading value RV is not finite")
    if raw < 0:
        raise EvidenceError(f"reading value RV={raw} is negative")
    _sign, digits, exponent = raw.as_tuple()
    if len(digits) > MAX_DIGITS or not isinstance(exponent, int) or exponent < MIN_EXPONENT:
        raise EvidenceError("reading value RV has an absurd precision")
    if raw.adjusted() > 15:
        raise EvidenceError(f"reading value RV={raw} is beyond any meter")
    return raw


def _time(raw: str | None) -> tuple[datetime | None, str | None]:
    if raw is None:
        return None, None
    match = _TM.fullmatch(raw)
    if match is None:
        raise EvidenceError(f"time TM={raw[:40]!r} is not '<ISO 8601 time> <status>'")
    year, month, day, hour, minute, second, fraction, offset, status = match.groups()
    if status is not None and status not in _TIME_STATES:
        raise EvidenceError(f"unknown time status {status!r}")
    try:
        if offset == "Z":
            zone = UTC
        else:
            digits = offset[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            zone = timezone(-delta if offset[0] == "-" else delta)
        micros = int((fraction or "0").ljust(6, "0"))
        time = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micros,
            zone,
        )
    except ValueError:
        raise EvidenceError(f"time TM={raw!r} is not a valid date and time") from None
    return time, status


def _signature_bytes(section: Mapping[str, Any]) -> bytes:
    data = _opt_str(section, "SD", 4096)
    if not data:
        raise EvidenceError("OCMF signature section has no signature data (SD)")
    encoding = (_opt_str(section, "SE", 32) or "hex").lower()
    mime = _opt_str(section, "SM", 64)
    if mime is not None and mime.lower() != "application/x-der":
        raise EvidenceError(f"unsupported signature format SM={mime!r}")
    if encoding == "hex":
        if not _HEX.fullmatch(data):
            raise EvidenceError("signature data SD is not hexadecimal")
        return bytes.fromhex(data)
    if encoding == "base64":
        try:
            if _BASE64.fullmatch(data):
                return base64.b64decode(data, validate=True)
        except binascii.Error:
            pass
        raise EvidenceError("signature data SD is not base64")
    raise EvidenceError(f"unsupported signature encoding SE={encoding!r}")


# ---------------------------------------------------------------- SignedMeterValue objects


def parse_signed_meter_value(value: str | bytes | Mapping[str, Any]) -> SignedMeterData:
    """Accept every way chargers deliver OCMF over OCPP.

    * an OCPP 2.0.1/2.1 `signedMeterValue` object (a mapping): base64 `signedMeterData`,
      `encodingMethod` "OCMF", `publicKey`, `signingMethod`;
    * the OCPP 1.6 `SignedData` sampled value: the same object as JSON text (some backends
      name the data field `signedMeterValue`), a raw `OCMF|...` string, or that string in
      base64 or hex.

    Other encodings (EDL, SML, ...) raise `EvidenceError`, as does anything malformed.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise EvidenceError("signed meter value is not valid UTF-8") from None
    if isinstance(value, str):
        if len(value) > MAX_ENVELOPE_CHARS:
            raise EvidenceError(
                f"signed meter value is longer than {MAX_ENVELOPE_CHARS} characters"
            )
        text = value.strip()
        if text.startswith("{"):
            return _from_mapping(_json_object(text, "signed meter value"))
        return SignedMeterData(parse_ocmf(_ocmf_text(text)), None, None, "OCMF")
    if isinstance(value, Mapping):
        return _from_mapping(value)
    raise EvidenceError(f"signed meter value must be text or an object, not {type(value).__name__}")


def _from_mapping(obj: Mapping[str, Any]) -> SignedMeterData:
    data = obj.get("signedMeterData", obj.get("signedMeterValue"))
    if not isinstance(data, str) or not data.strip():
        raise EvidenceError("signed meter value has no signedMeterData")
    if len(data) > MAX_ENVELOPE_CHARS:
        raise EvidenceError("signedMeterData is too long")
    encoding = obj.get("encodingMethod")
    if encoding is not None and not isinstance(encoding, str):
        raise EvidenceError("encodingMethod must be a string")
    if encoding and encoding.strip().upper() != "OCMF":
        raise EvidenceError(f"encodingMethod {encoding[:30]!r} is not OCMF")
    key = obj.get("publicKey")
    if key is not None and not isinstance(key, str):
        raise EvidenceError("publicKey must be a string")
    method = obj.get("signingMethod")
    if method is not None and not isinstance(method, str):
        raise EvidenceError("signingMethod must be a string")
    record = parse_ocmf(_ocmf_text(data.strip()))
    if record.signature_algorithm is None and method and _known_algorithm(method):
        # OCPP 2.1 lets the method travel beside the data instead of inside it.
        record = replace(record, signature_algorithm=method.strip())
    public_key = (key.strip() or None) if key else None
    return SignedMeterData(record, public_key, method or None, "OCMF")


def _ocmf_text(text: str) -> str:
    """The OCMF string itself, whether sent plain, in hex or in base64."""
    if text.startswith("OCMF|"):
        return text
    compact = _WHITESPACE.sub("", text)
    decoded: bytes | None = None
    if _HEX.fullmatch(compact):
        decoded = bytes.fromhex(compact)
    if (decoded is None or not decoded.startswith(b"OCMF|")) and _BASE64.fullmatch(compact):
        try:
            decoded = base64.b64decode(compact, validate=True)
        except binascii.Error:
            decoded = None
    if decoded is None or not decoded.startswith(b"OCMF|"):
        raise EvidenceError("signed meter data is not OCMF (plain, hex or base64)")
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise EvidenceError("signed meter data is not valid UTF-8") from None
