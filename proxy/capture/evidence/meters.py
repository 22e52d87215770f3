"""Is the meter a MID-certified one: the list of MID meter models, and `classify`.

The list is an editable TOML file (`data/mid_meters.toml` beside this module); `classify` weighs
it together with signed readings and a known key into a `MeterClass`.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.capture.evidence.ocmf import (
    MAX_METER_TYPE_CHARS,
    EvidenceError,
    OcmfRecord,
    SignedMeterData,
)
from proxy.capture.evidence.signatures import verify

_DATA_FILE = Path(__file__).with_name("data") / "mid_meters.toml"


class MeterClass(enum.StrEnum):
    """How well a charger's meter is shown to be MID-certified, strongest first."""

    SIGNED_VERIFIED = "signed-verified"
    SIGNED_UNVERIFIED = "signed-unverified"
    DECLARED = "declared"
    UNKNOWN = "unknown"


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
    """Read the MID meter list (TOML); the shipped `proxy/capture/evidence/data/mid_meters.toml` by default.

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
