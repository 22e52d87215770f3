"""Webhook signatures, sans-IO: the `Ere-Signature` header the proxy sends, and how to check it.

The header reads `t=<unix seconds>,v1=<hex HMAC-SHA256>`: the MAC of `<t>.<body>` (the
timestamp in decimal, a dot, then the request body's bytes exactly as sent) keyed with the
endpoint's signing secret (the `whsec_...` string as shown at creation, UTF-8). Each attempt
signs anew, so `t` is when that attempt was made. A receiver recomputes the MAC over the raw
body (before any JSON parsing), compares it in constant time, and refuses a timestamp further
than `tolerance` seconds from its own clock, so a captured request cannot be replayed later.
Several `v1=` entries may appear; one matching is enough.

`verify` is written to be copied by receivers: standard library only, no state. Errors: it
returns False for anything that does not check out (a malformed or oversized header, a wrong
MAC, a stale or future timestamp) and never raises for hostile input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "DELIVERY_ID_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "new_secret",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "Ere-Signature"
EVENT_ID_HEADER = "Ere-Event-Id"
EVENT_TYPE_HEADER = "Ere-Event-Type"
DELIVERY_ID_HEADER = "Ere-Delivery-Id"

_SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
_MAX_HEADER = 4096


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes, base64url."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    return _SECRET_PREFIX + raw


def _mac(body: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `Ere-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_mac(body, secret, timestamp)}"


def verify(header: str, body: bytes, secret: str, now: float, tolerance: float = 300.0) -> bool:
    """Whether `header` (an `Ere-Signature` value) signs `body` with `secret`, at a time within
    `tolerance` seconds of `now` (unix seconds)."""
    if len(header) > _MAX_HEADER:
        return False
    timestamp = None
    macs = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            macs.append(value)
    if timestamp is None or not macs or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(body, secret, timestamp).encode()
    # Every candidate is compared (no early exit), each in constant time.
    matched = [mac.isascii() and hmac.compare_digest(expected, mac.encode()) for mac in macs]
    return any(matched)
