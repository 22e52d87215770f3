"""What a dashboard user may do: their role as partner API scopes.

A signed-in user acts through the same partner-scoped data classes as an API key
(`proxy.api.partner_data.PartnerData`), as a `Caller` of their partner whose scopes come from
their role: an `admin` holds every scope, a `viewer` only the read scopes. Pages check the scope
they need (`proxy.api.dashboard.auth.Member.require`), so a role is enforced on the server
exactly as a key's scopes are. Reading webhooks needs `webhooks:write`, as in the API: an
endpoint's URL and log are for whoever manages them. Pure.
"""

from __future__ import annotations

from proxy.api.key_store import Caller
from proxy.api.keys import SCOPES

__all__ = ["ROLES", "ROLE_SCOPES", "caller_of"]

ROLES = ("admin", "viewer")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "viewer": frozenset(scope for scope in SCOPES if scope.endswith(":read")),
}


def caller_of(partner_id: str, user_id: int, role: str) -> Caller:
    """The caller a user acts as (an unknown role holds no scope)."""
    scopes = ROLE_SCOPES.get(role, frozenset())
    return Caller(partner_id, f"user:{user_id}", scopes, user_id=user_id)
