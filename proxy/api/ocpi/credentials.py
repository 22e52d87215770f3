"""The registration's objects, sans-IO: Credentials, our versions and version details, and the
platform's.

`parse_credentials` reads the Credentials object a platform POSTs or PUTs (credentials.asciidoc):
its token B (1-64 printable ASCII without whitespace), the URL of its versions endpoint and its
roles, each a unique (role, country code, party id) with business details. `Identity` is who we
are (`[api.ocpi]`), and gives our Credentials, versions and version details: 2.2.1 only, with
the credentials module (role SENDER, as the spec advises for one's own), and the Receiver
interfaces of CDRs and Sessions. `pick_version` and `parse_details` read the platform's answers
during the registration; they want 2.2.1 (else status 3002).

Errors: `OcpiError` status 2001 naming the field; 3002 for a platform without 2.2.1, 3001 for an
answer of the platform that is not OCPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.tokens import valid_token
from proxy.api.ocpi.values import CountryCode, PartyId, String100, Url, decode

__all__ = [
    "VERSION",
    "Credentials",
    "CredentialsRole",
    "Identity",
    "parse_credentials",
    "parse_details",
    "pick_version",
]

VERSION = "2.2.1"
Role = Literal["CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"]


class BusinessDetails(msgspec.Struct):
    name: String100
    website: Url | None = None
    logo: dict[str, Any] | None = None


class CredentialsRole(msgspec.Struct):
    role: Role
    business_details: BusinessDetails
    party_id: PartyId
    country_code: CountryCode

    @property
    def party(self) -> tuple[str, str]:
        """(country code, party id), upper case: CiStrings compare case-insensitively."""
        return self.country_code.upper(), self.party_id.upper()


class Credentials(msgspec.Struct):
    token: str
    url: Url
    roles: list[CredentialsRole]

    def __post_init__(self) -> None:
        if not valid_token(self.token):
            raise ValueError("token must be 1 to 64 printable ASCII characters without spaces")
        if not 1 <= len(self.roles) <= 100:
            raise ValueError("roles must list 1 to 100 roles")
        keys = [(role.role, *role.party) for role in self.roles]
        if len(set(keys)) != len(keys):
            raise ValueError("roles must not repeat a role, country code and party id")

    def stored_roles(self) -> list[dict[str, str]]:
        """The roles as kept with the platform (and checked against what it pushes)."""
        return [
            {
                "role": role.role,
                "country_code": role.country_code.upper(),
                "party_id": role.party_id.upper(),
                "name": role.business_details.name,
            }
            for role in self.roles
        ]


def parse_credentials(body: bytes) -> Credentials:
    """The Credentials object of a POST or PUT (see the module docstring)."""
    return decode(body, Credentials)


@dataclass(frozen=True)
class Identity:
    """Who we are to platforms, and where our OCPI endpoints are (`base`: our public URL)."""

    base: str
    role: str
    country_code: str
    party_id: str
    business_name: str

    @property
    def versions_url(self) -> str:
        return f"{self.base}/ocpi/versions"

    @property
    def details_url(self) -> str:
        return f"{self.base}/ocpi/{VERSION}"

    def url(self, module: str) -> str:
        return f"{self.base}/ocpi/{VERSION}/{module}"

    def credentials(self, token: str) -> dict[str, Any]:
        """Our Credentials object, with the token the platform calls us with."""
        return {
            "token": token,
            "url": self.versions_url,
            "roles": [
                {
                    "role": self.role,
                    "business_details": {"name": self.business_name},
                    "party_id": self.party_id,
                    "country_code": self.country_code,
                }
            ],
        }

    def versions(self) -> list[dict[str, str]]:
        return [{"version": VERSION, "url": self.details_url}]

    def details(self) -> dict[str, Any]:
        endpoints = [("credentials", "SENDER"), ("cdrs", "RECEIVER"), ("sessions", "RECEIVER")]
        return {
            "version": VERSION,
            "endpoints": [
                {"identifier": module, "role": role, "url": self.url(module)}
                for module, role in endpoints
            ],
        }


class _Version(msgspec.Struct):
    version: str
    url: Url


class _Endpoint(msgspec.Struct):
    identifier: str
    url: Url
    role: str | None = None


class _Details(msgspec.Struct):
    version: str
    endpoints: list[_Endpoint]


class _Answer(msgspec.Struct):
    status_code: int
    data: msgspec.Raw = msgspec.Raw(b"null")


def _data(body: bytes, what: str) -> bytes:
    """The `data` of a platform's successful OCPI answer (3001 for anything else)."""
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise OcpiError(Status.CLIENT_API_UNUSABLE, f"your {what} is not an OCPI answer") from None
    if not 1000 <= answer.status_code < 2000:
        raise OcpiError(
            Status.CLIENT_API_UNUSABLE, f"your {what} answered status {answer.status_code}"
        )
    return bytes(answer.data)


def pick_version(body: bytes) -> str:
    """The URL of version 2.2.1's details in the platform's versions answer."""
    try:
        versions = msgspec.json.decode(_data(body, "versions endpoint"), type=list[_Version])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise OcpiError(
            Status.CLIENT_API_UNUSABLE, "your versions endpoint does not list versions"
        ) from None
    for version in versions:
        if version.version == VERSION:
            return version.url
    raise OcpiError(Status.UNSUPPORTED_VERSION, f"your platform does not offer OCPI {VERSION}")


def parse_details(body: bytes) -> list[dict[str, str | None]]:
    """The endpoints of the platform's 2.2.1 version details."""
    try:
        details = msgspec.json.decode(_data(body, "version details"), type=_Details)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise OcpiError(
            Status.CLIENT_API_UNUSABLE, "your version details are not OCPI version details"
        ) from None
    if details.version != VERSION:
        raise OcpiError(
            Status.UNSUPPORTED_VERSION, f"your version details are of {details.version[:10]!r}"
        )
    return [
        {"identifier": e.identifier[:64], "role": (e.role or "")[:16] or None, "url": e.url}
        for e in details.endpoints[:100]
    ]
