"""Meter evidence: is a charger's meter a MID-certified one?

A private home charger's sessions count for ERE only when a MID-certified meter is built into
the charger, and no OCPP field says "MID" by itself. The evidence this module weighs:

* signed meter values in OCMF (the S.A.F.E. e.V. "Open Charge Metering Format", `Eichrecht`):
  `OCMF|{payload}|{signature}`, sent raw or wrapped in a SignedMeterValue object
  (`signedMeterData` base64, `encodingMethod`, `publicKey`, `signingMethod`);
* the ECDSA signature over the payload, checked when a public key is known;
* BootNotification `meterType`/`meterSerialNumber`, matched against an editable list of
  MID-certified meter models (`proxy/capture/data/mid_meters.toml`).

`classify` turns that into a `MeterClass`. Everything here is sans-IO (the only file read is the
meter list) and clock-free. Bad input of any kind raises `EvidenceError` with a readable
`reason`, never another exception; a signature that simply does not match gives `False`.
Readings are `Decimal`, never float, with energy normalised to Wh.
"""

from __future__ import annotations

import base64
import binascii
import enum
import fnmatch
import functools
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

__all__ = [
    "EvidenceError",
    "MeterClass",
    "MidMeter",
    "MidMeterList",
    "OcmfRecord",
    "Reading",
    "SignedMeterData",
    "classify",
    "load_mid_meters",
    "load_public_key",
    "parse_ocmf",
    "parse_signed_meter_value",
    "verify",
]

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

_ENERGY_UNITS = {"kWh": 1000, "KWh": 1000, "kwh": 1000, "KWH": 1000, "Wh": 1, "wh": 1, "WH": 1}
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

_DATA_FILE = Path(__file__).with_name("data") / "mid_meters.toml"


class EvidenceError(ValueError):
    """Input that cannot serve as meter evidence; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MeterClass(enum.StrEnum):
    """How well a charger's meter is shown to be MID-certified, strongest first."""

    SIGNED_VERIFIED = "signed-verified"
    SIGNED_UNVERIFIED = "signed-unverified"
    DECLARED = "declared"
    UNKNOWN = "unknown"


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
    sign, digits, exponent = raw.as_tuple()
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
            zone = timezone.utc
        else:
            digits = offset[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            zone = timezone(-delta if offset[0] == "-" else delta)
        micros = int((fraction or "0").ljust(6, "0"))
        time = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, zone
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
            raise EvidenceError(f"signed meter value is longer than {MAX_ENVELOPE_CHARS} characters")
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


# ------------------------------------------------------------------------------ signatures


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


def load_public_key(
    key: bytes | str, curve: type[ec.EllipticCurve] | None = None
) -> ec.EllipticCurvePublicKey:
    """Load an EC public key given as DER, PEM, hex or base64 text (spaces allowed).

    OCPP 2.0.1 sends `publicKey` base64-encoded, and some chargers base64-encode a hex or PEM
    text rather than the DER bytes; both are understood. A bare uncompressed point (`04...`)
    is accepted when `curve` says which curve it lies on. Anything else: `EvidenceError`.
    """
    return _load_key(key, curve, depth=0)


def _load_key(
    key: bytes | str, curve: type[ec.EllipticCurve] | None, depth: int
) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, (bytes, str)):
        raise EvidenceError("public key must be bytes or text")
    if len(key) > MAX_KEY_CHARS:
        raise EvidenceError("public key is too long")
    if isinstance(key, str):
        text = key.strip()
        if "-----BEGIN" in text:
            return _load_key(text.encode("ascii", "replace"), curve, depth)
        compact = _WHITESPACE.sub("", text)
        if _HEX.fullmatch(compact):
            return _load_key(bytes.fromhex(compact), curve, depth)
        if _BASE64.fullmatch(compact):
            try:
                raw = base64.b64decode(compact, validate=True)
            except binascii.Error:
                raise EvidenceError("public key is not valid base64") from None
            if depth == 0 and raw[:1] != b"\x30" and raw.isascii():
                # Not DER (which opens with a SEQUENCE, 0x30) but text: base64 of a hex or
                # PEM key, as some chargers send. Decode once more.
                return _load_key(raw.decode("ascii"), curve, depth + 1)
            return _load_key(raw, curve, depth)
        raise EvidenceError("public key is neither PEM, hex nor base64")
    try:
        if key.lstrip().startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_public_key(key)
        elif curve is not None and key[:1] == b"\x04":
            loaded = ec.EllipticCurvePublicKey.from_encoded_point(curve(), key)
        else:
            loaded = serialization.load_der_public_key(key)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise EvidenceError("public key cannot be read as an EC public key") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise EvidenceError("public key is not an elliptic-curve key")
    return loaded


def _der_signature(signature: bytes, coordinate_bytes: int) -> bytes | None:
    """The signature as strict DER, or None when it is no ECDSA signature at all.

    Some meters write both integers at a fixed width without the leading zero DER needs for a
    high first bit (real eBZ records do); those integers are read as unsigned. A bare `r || s`
    of twice the coordinate size is accepted as well.
    """
    numbers = _der_integers(signature)
    if numbers is None and len(signature) == 2 * coordinate_bytes:
        numbers = (
            int.from_bytes(signature[:coordinate_bytes], "big"),
            int.from_bytes(signature[coordinate_bytes:], "big"),
        )
    if numbers is None:
        return None
    return utils.encode_dss_signature(*numbers)


def _der_integers(data: bytes) -> tuple[int, int] | None:
    def element(buffer: bytes, at: int, tag: int) -> tuple[bytes, int] | None:
        if at + 2 > len(buffer) or buffer[at] != tag:
            return None
        length, at = buffer[at + 1], at + 2
        if length == 0x81:
            if at >= len(buffer):
                return None
            length, at = buffer[at], at + 1
        elif length > 0x80:
            return None
        if at + length > len(buffer):
            return None
        return buffer[at : at + length], at + length

    sequence = element(data, 0, 0x30)
    if sequence is None or sequence[1] != len(data):
        return None
    body = sequence[0]
    first = element(body, 0, 0x02)
    if first is None or not first[0]:
        return None
    second = element(body, first[1], 0x02)
    if second is None or not second[0] or second[1] != len(body):
        return None
    return int.from_bytes(first[0], "big"), int.from_bytes(second[0], "big")


def verify(evidence: OcmfRecord | SignedMeterData, public_key: bytes | str) -> bool:
    """Check the record's ECDSA signature (SHA-256 over the payload section as sent).

    Returns False when the signature does not match the payload and key (tampered data, wrong
    key, garbled signature bytes). Raises `EvidenceError` when the check cannot be made: an
    unreadable key, an unknown or unsupported algorithm, or a key on another curve than the
    algorithm names.
    """
    record = evidence.record if isinstance(evidence, SignedMeterData) else evidence
    curve = _curve_for(record.algorithm)
    key = load_public_key(public_key, curve)
    if not isinstance(key.curve, curve):
        raise EvidenceError(
            f"public key is on curve {key.curve.name}, the record is signed with {record.algorithm}"
        )
    signature = _der_signature(record.signature, (key.curve.key_size + 7) // 8)
    if signature is None:
        return False
    try:
        key.verify(signature, record.payload.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------ MID meter list


@dataclass(frozen=True, slots=True)
class MidMeter:
    """One entry of the MID meter list: a vendor and glob patterns of its MID models."""

    vendor: str
    models: tuple[str, ...]
    confidence: str
    source: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class MidMeterList:
    entries: tuple[MidMeter, ...]

    def match(self, meter_type: str | None) -> MidMeter | None:
        """The entry whose model pattern matches `meter_type`, or None.

        Case, spaces and punctuation are ignored, and a pattern may start at any word of the
        meter type, so "Eastron SDM630-MID V2" matches "SDM630*" while "XB23" does not match
        "B23". A meter type longer than `MAX_METER_TYPE_CHARS` matches nothing.
        """
        if not meter_type or len(meter_type) > MAX_METER_TYPE_CHARS:
            return None
        words = [w for w in re.split(r"[^A-Za-z0-9]+", meter_type.upper()) if w]
        joined = "".join(words)
        starts, at = [], 0
        for word in words:
            starts.append(at)
            at += len(word)
        for entry in self.entries:
            for model in entry.models:
                pattern = _normalise_pattern(model) + "*"
                if any(fnmatch.fnmatchcase(joined[i:], pattern) for i in starts):
                    return entry
        return None


def _normalise_pattern(pattern: str) -> str:
    return re.sub(r"[^A-Z0-9*?]", "", pattern.upper())


def load_mid_meters(path: str | Path | None = None) -> MidMeterList:
    """Read the MID meter list (TOML); the shipped `proxy/capture/data/mid_meters.toml` by default.

    A file that is missing or malformed raises `EvidenceError` naming the file and the problem.
    """
    if path is None:
        return _shipped_list()
    return _read_list(Path(path))


@functools.cache
def _shipped_list() -> MidMeterList:
    return _read_list(_DATA_FILE)


def _read_list(path: Path) -> MidMeterList:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read MID meter list ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise EvidenceError(f"{path}: not valid TOML ({exc})") from None
    entries = data.get("meter")
    if not isinstance(entries, list):
        raise EvidenceError(f"{path}: expected [[meter]] tables")
    return MidMeterList(tuple(_entry(path, n, e) for n, e in enumerate(entries, 1)))


def _entry(path: Path, number: int, raw: Any) -> MidMeter:
    where = f"{path}: meter #{number}"
    if not isinstance(raw, dict):
        raise EvidenceError(f"{where} is not a table")
    vendor, models = raw.get("vendor"), raw.get("models")
    if not isinstance(vendor, str) or not vendor.strip():
        raise EvidenceError(f"{where} needs a vendor")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise EvidenceError(f"{where} ({vendor}) needs a non-empty list of models")
    for model in models:
        if len(_normalise_pattern(model).replace("*", "").replace("?", "")) < 3:
            raise EvidenceError(f"{where} ({vendor}): model pattern {model!r} is too short")
    texts = {k: raw.get(k, "") for k in ("confidence", "source", "note")}
    if not all(isinstance(v, str) for v in texts.values()):
        raise EvidenceError(f"{where} ({vendor}): confidence, source and note must be strings")
    return MidMeter(vendor.strip(), tuple(models), **texts)


# ------------------------------------------------------------------------- classification


def classify(
    meter_type: str | None,
    meter_serial: str | None,
    signed: Iterable[OcmfRecord | SignedMeterData] = (),
    known_key: bytes | str | None = None,
    mid_meters: MidMeterList | None = None,
) -> MeterClass:
    """Classify a charger's meter from its BootNotification fields and signed readings.

    * signed-verified: signed records exist and every one verifies with `known_key`, a key
      obtained out of band (a registry, the meter's label, or pinned on first sight; the
      caller decides). One failing record is enough to withhold this class.
    * signed-unverified: signed records exist but there is no known key or they fail it.
    * declared: no signed records; meter type and serial are given and the type matches the
      MID meter list.
    * unknown: anything else.

    Never raises for unusable keys: a check that cannot be made simply does not verify.
    """
    records: Sequence[OcmfRecord | SignedMeterData] = list(signed)
    if records:
        if known_key is not None and all(_verifies(r, known_key) for r in records):
            return MeterClass.SIGNED_VERIFIED
        return MeterClass.SIGNED_UNVERIFIED
    if meter_type and meter_type.strip() and meter_serial and meter_serial.strip():
        meters = mid_meters if mid_meters is not None else load_mid_meters()
        if meters.match(meter_type) is not None:
            return MeterClass.DECLARED
    return MeterClass.UNKNOWN


def _verifies(record: OcmfRecord | SignedMeterData, key: bytes | str) -> bool:
    try:
        return verify(record, key)
    except EvidenceError:
        return False
