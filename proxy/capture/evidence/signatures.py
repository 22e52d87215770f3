"""Checking an OCMF record's ECDSA signature with a public key (OCMF table 22 algorithms).

`verify` gives False for a signature that simply does not match, and raises `EvidenceError`
for a key or signature that cannot be used at all.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from proxy.capture.evidence.ocmf import (
    _BASE64,
    _HEX,
    _WHITESPACE,
    MAX_KEY_CHARS,
    EvidenceError,
    OcmfRecord,
    SignedMeterData,
    _curve_for,
)


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
