"""Binding a charger's client certificate to its identity (security profile 3), sans-IO.

The TLS layer has already verified the certificate (chain to `[proxy] tls_client_ca`, validity,
revocation); what is left is whether it was issued to the identity in the URL. The rule is
`[proxy] client_cert_identity`:

- `cn` (default; OCPP 2.0.1 security profile 3): the subject holds exactly one common name, equal
  to the identity;
- `san_uri`: a URI in subjectAltName whose last part (after the last `/` or `:`) is the identity,
  e.g. `urn:cpo:cs:CP-1`;
- `none`: any certificate the CA issued will do (the URL's identity is not checked).

`bind` says whether a certificate is absent, bound or a mismatch; `forwarded_identity` is the
value a back-office may be sent in `forward_client_identity`. Nothing here raises on what a peer
presents: an odd certificate is simply not bound.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

IdentityRule = Literal["cn", "san_uri", "none"]
IDENTITY_RULES: tuple[str, ...] = ("cn", "san_uri", "none")


@dataclass(frozen=True)
class ClientCertificate:
    """What the binding needs of a verified client certificate: subject CNs and SAN URIs."""

    common_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()


def from_peercert(decoded: Mapping[str, Any] | None) -> ClientCertificate | None:
    """The `ClientCertificate` of `ssl`'s decoded peer certificate (None or empty: none presented).

    `getpeercert()` decodes only a certificate that was verified, so a result here is verified.
    """
    if not decoded:
        return None
    names = []
    for rdn in decoded.get("subject", ()):
        for pair in rdn:
            if len(pair) == 2 and pair[0] == "commonName" and isinstance(pair[1], str):
                names.append(pair[1])
    uris = [
        value
        for kind, value in decoded.get("subjectAltName", ())
        if kind == "URI" and isinstance(value, str)
    ]
    return ClientCertificate(tuple(names), tuple(uris))


class Binding(enum.Enum):
    ABSENT = "absent"  # no client certificate was presented
    BOUND = "bound"  # the certificate was issued to this identity (or the rule is `none`)
    MISMATCH = "mismatch"  # a valid certificate, issued to someone else


def _uri_names(uri: str) -> str:
    """The last part of a URI (after the last `/` or `:`)."""
    return uri.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def bind(rule: IdentityRule, identity: str, certificate: ClientCertificate | None) -> Binding:
    """Whether `certificate` is bound to `identity` under `rule` (see the module docstring)."""
    if certificate is None:
        return Binding.ABSENT
    if rule == "none":
        return Binding.BOUND
    if rule == "cn":
        return Binding.BOUND if certificate.common_names == (identity,) else Binding.MISMATCH
    if any(_uri_names(uri) == identity for uri in certificate.uris):
        return Binding.BOUND
    return Binding.MISMATCH


def _header_safe(value: str) -> bool:
    return 0 < len(value) <= 255 and value.isascii() and value.isprintable()


def forwarded_identity(
    rule: IdentityRule, identity: str, certificate: ClientCertificate | None
) -> str | None:
    """The verified identity a back-office may be told, or None (nothing verified to tell).

    The charger's identity when the certificate is bound to it; under rule `none` the
    certificate's single common name (the URL's identity was not checked). A value that could not
    be an HTTP header value is never forwarded.
    """
    if bind(rule, identity, certificate) is not Binding.BOUND:
        return None
    assert certificate is not None
    if rule != "none":
        return identity if _header_safe(identity) else None
    if len(certificate.common_names) == 1 and _header_safe(certificate.common_names[0]):
        return certificate.common_names[0]
    return None
