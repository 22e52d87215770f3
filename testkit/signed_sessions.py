"""A charger's traffic as capture events, with the meter facts the MID rules weigh: a boot (1.6
with a meter type and serial, or 2.0.1 without), a plain 1.6 session, and 2.0.1 sessions whose
begin and end readings a meter signs in OCMF with a key of the test's own.

Each function runs the frames through a real tracker (`testkit.capture_feeds.Feed`) received
from `received` on, a second apart, and returns the events for `proxy.capture.sessions.
store_events`. The first signed reading pins the meter's key (trust on first sight), so every
session signed with one key is `signed-verified`, and one signed with another key after it
`signed-unverified`.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from testkit.capture_feeds import Feed

__all__ = [
    "boot_16",
    "boot_201",
    "meter_key",
    "plain_session_16",
    "public_key_text",
    "signed_meter_value",
    "signed_session_201",
]


def meter_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A fresh meter key on `curve`, by default P-256 (the OCMF default curve)."""
    return ec.generate_private_key(curve or ec.SECP256R1())


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _feed(version: str, identity: str, received: datetime) -> Feed:
    feed = Feed(version, identity)
    feed.at = received.timestamp()
    return feed


def _accept_boot(feed: Feed, received: datetime) -> None:
    answer = {"status": "Accepted", "currentTime": _utc(received), "interval": 300}
    feed.upstream([3, "b", answer])


def boot_16(
    identity: str, meter_type: str | None, meter_serial: str | None, received: datetime
) -> list:
    """A 1.6 BootNotification (Alfen Eve) naming its meter, accepted."""
    feed = _feed("ocpp1.6", identity, received)
    boot = {"chargePointVendor": "Alfen", "chargePointModel": "Eve", "firmwareVersion": "6.1"}
    if meter_type is not None:
        boot["meterType"] = meter_type
    if meter_serial is not None:
        boot["meterSerialNumber"] = meter_serial
    feed.charger([2, "b", "BootNotification", boot])
    _accept_boot(feed, received)
    return feed.events


def boot_201(identity: str, received: datetime) -> list:
    """A 2.0.1 BootNotification (no meter fields in 2.0.1), accepted."""
    feed = _feed("ocpp2.0.1", identity, received)
    station = {"vendorName": "Wallbox", "model": "Pulsar Plus", "serialNumber": "WB-1"}
    feed.charger([2, "b", "BootNotification", {"reason": "PowerUp", "chargingStation": station}])
    _accept_boot(feed, received)
    return feed.events


def plain_session_16(
    identity: str, transaction: int, started: datetime, stopped: datetime, wh: int
) -> list:
    """A 1.6 session of `wh` Wh (meterStart 1000), received at its start and stop."""
    feed = _feed("ocpp1.6", identity, started)
    start = {"connectorId": 1, "idTag": "TAG", "meterStart": 1000, "timestamp": _utc(started)}
    feed.charger([2, "s", "StartTransaction", start])
    feed.upstream([3, "s", {"transactionId": transaction, "idTagInfo": {"status": "Accepted"}}])
    feed.at = stopped.timestamp()
    stop = {"transactionId": transaction, "meterStop": 1000 + wh, "timestamp": _utc(stopped)}
    feed.charger([2, "e", "StopTransaction", stop])
    feed.upstream([3, "e", {}])
    return feed.events


def signed_ocmf(key: ec.EllipticCurvePrivateKey, event: str, kwh: str, at: datetime) -> str:
    """An OCMF record of one reading (TX `event`, `kwh` kWh) signed with `key`."""
    payload = json.dumps(
        {
            "FV": "1.0",
            "GI": "Wallbox",
            "GS": "WB-1",
            "PG": "T1",
            "MV": "Iskra",
            "MM": "WM3M4C",
            "MS": "4711",
            "IS": False,
            "IT": "NONE",
            "RD": [
                {
                    "TM": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S,000+0000 S"),
                    "TX": event,
                    "RV": float(kwh),
                    "RI": "1-b:1.8.0",
                    "RU": "kWh",
                    "RT": "AC",
                    "EF": "",
                    "ST": "G",
                }
            ],
        },
        separators=(",", ":"),
    )
    signature = key.sign(payload.encode(), ec.ECDSA(hashes.SHA256())).hex().upper()
    return f'OCMF|{payload}|{{"SD":"{signature}"}}'


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """`key`'s public half as OCPP 2.x sends it in `publicKey`: base64 of the DER encoding."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed_meter_value(
    key: ec.EllipticCurvePrivateKey,
    event: str,
    kwh: str,
    at: datetime,
    *,
    signing_method: str | None = "",
    with_key: bool = True,
) -> dict[str, str]:
    """An OCPP 2.x `signedMeterValue` of one OCMF reading signed with `key` (see `signed_ocmf`).

    2.0.1 requires every field (`signingMethod` empty when the OCMF record names it); 2.1 may
    leave out `signingMethod` (None) and send `publicKey` with only some values (`with_key`).
    """
    value = {
        "signedMeterData": base64.b64encode(signed_ocmf(key, event, kwh, at).encode()).decode(),
        "signingMethod": signing_method,
        "encodingMethod": "OCMF",
        "publicKey": public_key_text(key) if with_key else None,
    }
    return {name: text for name, text in value.items() if text is not None}


def signed_session_201(
    identity: str,
    transaction_id: str,
    key: ec.EllipticCurvePrivateKey,
    readings: tuple[tuple[datetime, str], tuple[datetime, str]],
) -> list:
    """A 2.0.1 session from the first (time, kWh) reading to the second, both signed with
    `key` (the plain values disagree, so its energy comes from the signed ones), received at
    each reading's time."""
    feed = _feed("ocpp2.0.1", identity, readings[0][0])
    for seq, (kind, tx, (at, kwh)) in enumerate(
        (("Started", "B", readings[0]), ("Ended", "E", readings[1]))
    ):
        feed.at = at.timestamp()
        value = {
            "value": 0.0,
            "measurand": "Energy.Active.Import.Register",
            "unitOfMeasure": {"unit": "kWh"},
            "signedMeterValue": signed_meter_value(key, tx, kwh, at),
        }
        event = {
            "eventType": kind,
            "timestamp": _utc(at),
            "seqNo": seq,
            "triggerReason": "Authorized",
            "transactionInfo": {"transactionId": transaction_id},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{"timestamp": _utc(at), "sampledValue": [value]}],
        }
        feed.charger([2, f"t{seq}", "TransactionEvent", event])
        feed.upstream([3, f"t{seq}", {}])
    return feed.events
