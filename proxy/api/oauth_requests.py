"""OAuth2 client-credentials token requests (RFC 6749 §4.4), sans-IO: reading one, and its errors.

`read_token_request` takes the request's Content-Type and Authorization headers and its body
and gives the client (a partner key's id and secret) and the scopes asked for. The client
authenticates with HTTP Basic (RFC 6749 §2.3.1: id and secret form-urlencoded, then base64) or
with `client_id` and `client_secret` in the body, never both; another Authorization scheme is
no client authentication. The body is `application/x-www-form-urlencoded`, at most
`MAX_BODY_BYTES`, ASCII, each parameter at most once (§3.2); unknown parameters are ignored.
`narrow_scopes` gives the scopes a token gets: those asked for (space-separated, §3.3), each one
the key holds, or all of the key's when none are asked for.

Errors: `OAuthError` with its RFC 6749 §5.2 code. `invalid_client` (401) means the client did
not authenticate; its `key_id` names the key the request claimed, when it named one in the
key id's form, so a caller can count the failure against it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_plus

from proxy.api.keys import SCOPES, parse_key

__all__ = [
    "GRANT_TYPE",
    "MAX_BODY_BYTES",
    "OAuthError",
    "TokenRequest",
    "narrow_scopes",
    "read_token_request",
]

GRANT_TYPE = "client_credentials"
MAX_BODY_BYTES = 4096
_FORM = "application/x-www-form-urlencoded"
_MAX_FIELDS = 16


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` (the code), `description`, the HTTP status."""

    def __init__(
        self, error: str, description: str, *, status: int = 400, key_id: str | None = None
    ) -> None:
        super().__init__(description)
        self.error, self.description, self.status, self.key_id = error, description, status, key_id

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _invalid_client(description: str, key_id: str | None = None) -> OAuthError:
    return OAuthError("invalid_client", description, status=401, key_id=key_id)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A well-formed request: the key (`key_id`, `secret`) and the scopes asked for, if any."""

    key_id: str
    secret: str = field(repr=False)
    scopes: tuple[str, ...] | None


def read_token_request(
    content_type: str | None, authorization: str | None, body: bytes
) -> TokenRequest:
    """The request a token endpoint got (see the module docstring); OAuthError if malformed."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != _FORM:
        raise OAuthError("invalid_request", f"the body must be {_FORM}")
    form = _form(body)
    grant = form.get("grant_type")
    if grant is None:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", f"the only grant type is {GRANT_TYPE}")
    client_id, secret = _client(authorization, form)
    parsed = parse_key(f"ere_{client_id}_{secret}")
    if parsed is None:
        raise _invalid_client("unknown client or wrong secret", _key_id(client_id))
    scope = form.get("scope")
    return TokenRequest(parsed[0], parsed[1], None if scope is None else _scopes(scope))


def narrow_scopes(requested: tuple[str, ...] | None, held: Iterable[str]) -> tuple[str, ...]:
    """The scopes a token gets, in `SCOPES` order (OAuthError invalid_scope if one is not held)."""
    held = frozenset(held)
    wanted = held if requested is None else frozenset(requested)
    missing = sorted(wanted - held)
    if missing:
        raise OAuthError("invalid_scope", f"the key does not hold the scope {missing[0]}")
    return tuple(scope for scope in SCOPES if scope in wanted)


def _form(body: bytes) -> dict[str, str]:
    if len(body) > MAX_BODY_BYTES:
        raise OAuthError("invalid_request", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError is one: bytes or escapes that are not ASCII/UTF-8
        raise OAuthError("invalid_request", f"the body is not {_FORM}") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"the parameter {name[:40]!r} is given twice")
        form[name] = value
    return form


def _client(authorization: str | None, form: dict[str, str]) -> tuple[str, str]:
    """(client id, secret) from HTTP Basic or the body, as they are sent."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None or secret is None:
            raise _invalid_client(
                "authenticate the client: HTTP Basic, or client_id and client_secret",
                _key_id(client_id),
            )
        return client_id, secret
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("ascii")
        user, colon, password = decoded.partition(":")
        client_id = unquote_plus(user, errors="strict")
        secret = unquote_plus(password, errors="strict")
    except (binascii.Error, ValueError):
        raise _invalid_client("malformed HTTP Basic credentials") from None
    if not colon:
        raise _invalid_client("malformed HTTP Basic credentials")
    if "client_secret" in form:
        raise OAuthError("invalid_request", "authenticate the client one way: Basic or the body")
    if form.get("client_id", client_id) != client_id:
        raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
    return client_id, secret


def _key_id(client_id: str | None) -> str | None:
    """`client_id` if it has the form of a key id (only those are counted against a key)."""
    if client_id is None or len(client_id) != 12:
        return None
    return client_id if parse_key(f"ere_{client_id}_{'A' * 43}") is not None else None


def _scopes(text: str) -> tuple[str, ...]:
    tokens = text.split(" ")
    unknown = [token for token in tokens if token not in SCOPES]
    if unknown:
        shown = unknown[0][:40] or "(empty)"
        raise OAuthError("invalid_scope", f"unknown scope {shown!r}; scopes: {' '.join(SCOPES)}")
    return tuple(dict.fromkeys(tokens))
