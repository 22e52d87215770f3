"""Meter evidence: is a charger's meter a MID-certified one?

A private home charger's sessions count for ERE only when a MID-certified meter is built into
the charger, and no OCPP field says "MID" by itself. The evidence this module weighs:

* signed meter values in OCMF (the S.A.F.E. e.V. "Open Charge Metering Format", `Eichrecht`):
  `OCMF|{payload}|{signature}`, sent raw or wrapped in a SignedMeterValue object
  (`signedMeterData` base64, `encodingMethod`, `publicKey`, `signingMethod`);
* the ECDSA signature over the payload, checked when a public key is known;
* BootNotification `meterType`/`meterSerialNumber`, matched against an editable list of
  MID-certified meter models (`proxy/capture/evidence/data/mid_meters.toml`).

`classify` turns that into a `MeterClass`. Everything here is sans-IO (the only file read is the
meter list) and clock-free. Bad input of any kind raises `EvidenceError` with a readable
`reason`, never another exception; a signature that simply does not match gives `False`.
Readings are `Decimal`, never float, with energy normalised to Wh.

Three modules: `ocmf` (parsing records and SignedMeterValue objects), `signatures` (checking
them) and `meters` (the MID meter list and `classify`); their public names are here.
"""

from proxy.capture.evidence.meters import (
    MeterClass,
    MidMeter,
    MidMeterList,
    classify,
    load_mid_meters,
)
from proxy.capture.evidence.ocmf import (
    EvidenceError,
    OcmfRecord,
    Reading,
    SignedMeterData,
    parse_ocmf,
    parse_signed_meter_value,
)
from proxy.capture.evidence.signatures import load_public_key, verify

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
