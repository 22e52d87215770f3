"""OCPP-J's own rules, in one place: the charger identity in a URL, the subprotocols, close codes.

Pure data and checks; the handshake, the registry, the configuration and the links all ask here.
"""

from __future__ import annotations

import enum
from unicodedata import category

# OCPP-J: the last path segment of a charger's URL is its identity, percent-encoded; at most 48
# characters, and no ':' (it would break the HTTP Basic username).
MAX_IDENTITY_LENGTH = 48
# What no charger identity needs and what misleads where an identity is shown or used as a path:
# '/', ':' (Basic auth's separator), control characters, and Unicode's invisible format characters
# (bidi overrides, zero-width joiners, byte order marks) and line and paragraph separators.
_FORBIDDEN_CHARACTERS = frozenset("/:")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _forbidden(character: str) -> bool:
    return character in _FORBIDDEN_CHARACTERS or category(character) in _FORBIDDEN_CATEGORIES


# The subprotocols the proxy speaks (it offers the back-office what the charger offered of these).
SUPPORTED_SUBPROTOCOLS = ("ocpp1.6", "ocpp2.0", "ocpp2.0.1", "ocpp2.1")


def identity_problem(identity: str) -> str | None:
    """Why `identity` (decoded) cannot be a charger identity, or None when it can."""
    if not identity or len(identity) > MAX_IDENTITY_LENGTH:
        return f"identity must be 1 to {MAX_IDENTITY_LENGTH} characters"
    if identity in (".", "..") or any(map(_forbidden, identity)):
        return (
            "identity must not contain ':', '/', control or invisible formatting characters, "
            "nor be '.' or '..'"
        )
    return None


class CloseCode(enum.IntEnum):
    """The WebSocket close codes (RFC 6455 §7.4.1) the proxy sends or decides on."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
