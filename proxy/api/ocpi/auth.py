"""Which platform is calling: the FastAPI dependencies of the OCPI routes.

`any_platform` accepts the token of any platform that is not revoked: token A before the
registration, token C after; the versions and credentials modules take it. `registered` accepts
only a registered platform's token C: the spec wants token A refused (401) on every other
module. A request without a token, with one no platform holds, or with token A off those two
modules is HTTP 401. The partner API's rate limits apply (`proxy.api.throttle`): failures count
against the client's address, every authenticated request against its platform.

`routing` checks the message routing headers a functional module's request may carry:
`OCPI-from-*` must name one of the platform's roles and `OCPI-to-*` us (status 2001 otherwise),
and gives the headers of the answer (`OCPI-from-*` us, `OCPI-to-*` the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from proxy.api.ocpi import tokens
from proxy.api.ocpi.credentials import Identity
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.platforms import Platform, platform_for
from proxy.api.throttle import Throttle
from proxy.store.connection import Connection

__all__ = ["Caller", "Registered", "any_platform", "registered", "routing", "sender"]


@dataclass(frozen=True)
class Caller:
    """The calling platform and the token it called with."""

    platform: Platform
    token: str


def _unauthorized(message: str) -> OcpiError:
    return OcpiError(Status.CLIENT_ERROR, message, http_status=401)


async def any_platform(request: Request) -> Caller:
    throttle: Throttle = request.app.state.throttle
    address = throttle.address(request)
    throttle.check_address(address)
    presented = tokens.presented(request.headers.get("authorization"))
    database: Connection = request.app.state.database
    platform = await platform_for(database, presented)
    if platform is None:
        throttle.failed(address, None)
        raise _unauthorized("a valid credentials token is required: Authorization: Token <token>")
    throttle.admit(request, f"ocpi:{platform.platform_id}")
    token = next(t for t in presented if tokens.digest(t) == platform.token_sha256)
    return Caller(platform, token)


async def registered(caller: Annotated[Caller, Depends(any_platform)]) -> Platform:
    if not caller.platform.registered:
        raise _unauthorized("register first: this token is only good for versions and credentials")
    return caller.platform


Registered = Annotated[Platform, Depends(registered)]


def routing(request: Request, platform: Platform) -> dict[str, str]:
    """Check the request's routing headers; the answer's (see the module docstring)."""
    identity: Identity = request.app.state.identity
    headers = request.headers
    sender = (headers.get("ocpi-from-country-code"), headers.get("ocpi-from-party-id"))
    receiver = (headers.get("ocpi-to-country-code"), headers.get("ocpi-to-party-id"))
    if any(receiver) and (
        (receiver[0] or "").upper() != identity.country_code.upper()
        or (receiver[1] or "").upper() != identity.party_id.upper()
    ):
        raise OcpiError(
            Status.INVALID_PARAMETERS,
            f"OCPI-to-country-code and OCPI-to-party-id must name us: "
            f"{identity.country_code}/{identity.party_id}",
        )
    answer = {
        "OCPI-from-country-code": identity.country_code,
        "OCPI-from-party-id": identity.party_id,
    }
    if any(sender):
        if not platform.party(sender[0] or "", sender[1] or ""):
            raise OcpiError(
                Status.INVALID_PARAMETERS,
                "OCPI-from-country-code and OCPI-from-party-id must name a role you registered",
            )
        answer |= {
            "OCPI-to-country-code": (sender[0] or "").upper(),
            "OCPI-to-party-id": (sender[1] or "").upper(),
        }
    return answer


def sender(request: Request) -> tuple[str, str] | None:
    """The party the request's `OCPI-from-*` headers name, upper case, if they do."""
    country, party = (request.headers.get(f"ocpi-from-{n}") for n in ("country-code", "party-id"))
    if country is None and party is None:
        return None
    return (country or "").upper(), (party or "").upper()
