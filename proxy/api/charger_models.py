"""Request and response bodies of `/v1/chargers` (pydantic, at the edge only).

Requests are strict and bounded like `proxy.api.models`; the registry's own rules (the OCPP
identity rule, ws:// or wss:// upstream without credentials in it) and the link rules
(`proxy.ere.admin.validation`: watts, instants with an offset) apply after.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BootOut",
    "ChargerIn",
    "ChargerOut",
    "ChargerPage",
    "CredentialsOut",
    "CurrentSessionOut",
    "LinkIn",
    "LinkOut",
    "RegistrationOut",
]

_MAX = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ChargerIn(_Request):
    """A charger to forward: its OCPP identity and the back-office its link goes to."""

    identity: str = Field(max_length=_MAX, description="the charger's OCPP identity (≤ 48)")
    upstream: str = Field(
        max_length=_MAX,
        description="ws:// or wss:// base URL of the charger's back-office (no credentials in it)",
        examples=["wss://csms.example.com/ocpp"],
    )
    upstream_username: str | None = Field(
        default=None, max_length=200, description="sent upstream; default the identity"
    )
    upstream_password: str | None = Field(
        default=None, max_length=200, description="sent upstream; stored encrypted"
    )


class CredentialsOut(BaseModel):
    """A registered charger and what to configure on it; the password is shown once."""

    identity: str
    ocpp_url: str | None = Field(description="null: the operator has not set a public URL")
    username: str
    password: str | None = Field(
        description="Basic auth password for the charger; only in the first answer (a replay "
        "of the same request answers null)"
    )
    upstream: str
    upstream_username: str | None
    upstream_secret: bool = Field(description="an upstream password is stored (encrypted)")
    created_at: datetime


class LinkIn(_Request):
    """Link a charger to one of the partner's customers from `valid_from` on."""

    customer_id: str = Field(max_length=_MAX)
    max_power_w: int = Field(description="the charger's maximum power in watts (≤ 1 MW)")
    valid_from: str | None = Field(
        default=None,
        max_length=_MAX,
        description="ISO 8601 with a UTC offset; default now. Never inside a closed quarter.",
        examples=["2026-04-01T00:00:00+02:00"],
    )


class LinkOut(BaseModel):
    customer_id: str
    max_power_w: Decimal
    valid_from: datetime
    valid_until: datetime | None


class BootOut(BaseModel):
    """What the charger said about itself at its last boot."""

    booted_at: datetime
    vendor: str
    model: str
    serial: str | None
    firmware: str | None
    meter_type: str | None
    meter_serial: str | None


class CurrentSessionOut(BaseModel):
    id: int
    transaction_id: str
    connector_id: int | None
    started_at: datetime | None
    energy_kwh: Decimal | None


class RegistrationOut(BaseModel):
    """How the proxy forwards a charger this partner registered."""

    ocpp_url: str | None
    upstream: str
    upstream_username: str | None
    enabled: bool
    registered_at: datetime


class ChargerOut(BaseModel):
    identity: str
    last_seen: datetime | None = Field(
        description="when the proxy last recorded an event of the charger (there is no live "
        "connection state in the database)"
    )
    meter_class: str | None = Field(
        description="the meter's evidence class from the last boot: signed-verified, "
        "signed-unverified, declared or unknown"
    )
    last_boot: BootOut | None
    current_session: CurrentSessionOut | None
    current_link: LinkOut | None
    registration: RegistrationOut | None = Field(description="null: not registered by you")


class ChargerPage(BaseModel):
    data: list[ChargerOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")
