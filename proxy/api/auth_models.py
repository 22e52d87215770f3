"""The bodies of the partner API's own authentication operations (pydantic, at the edge only):
rotating the calling key, and the OAuth2 token endpoint's answers (RFC 6749 §5.1, §5.2)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from proxy.api.key_store import MAX_GRACE

__all__ = ["KeyRotationIn", "OAuthErrorOut", "RotatedKeyOut", "TokenOut"]

MAX_GRACE_HOURS = MAX_GRACE // timedelta(hours=1)


class KeyRotationIn(BaseModel):
    """How long the key being replaced keeps working beside the new one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    grace_hours: int = Field(
        default=24,
        ge=0,
        le=MAX_GRACE_HOURS,
        description="hours the old key keeps working (0: it stops at once)",
    )


class RotatedKeyOut(BaseModel):
    key: str = Field(description="the new key: shown once, keep it secret")
    key_id: str
    scopes: list[str]
    replaces: str = Field(description="the key id of the key replaced")
    replaced_key_expires_at: datetime = Field(description="when the replaced key stops working")


class TokenOut(BaseModel):
    access_token: str = Field(description="use as `Authorization: Bearer <access_token>`")
    token_type: str = Field(examples=["Bearer"])
    expires_in: int = Field(description="seconds the token is valid")
    scope: str = Field(description="the token's scopes, space-separated")


class OAuthErrorOut(BaseModel):
    """An RFC 6749 §5.2 error (not problem details: OAuth2 clients expect this form)."""

    error: str = Field(
        examples=["invalid_client"],
        description="invalid_request, invalid_client, invalid_grant, invalid_scope or "
        "unsupported_grant_type",
    )
    error_description: str
