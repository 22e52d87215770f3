"""The frame of every signed-in page: the partner's white label and the navigation a role sees.

`page` renders a template inside that frame: the partner's display name, logo and colour
(`PartnerData.branding`, the colour through `/dashboard/brand.css`), the signed-in user with
the log-out form, and the sections their role may open (`NAV`: a section needs the scope of
its page, so a viewer is not shown admin pages, which refuse them anyway).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from proxy.api.dashboard.auth import Member
from proxy.api.dashboard.rendering import render

__all__ = ["NAV", "page"]

# (key, path, label, scope needed: None for any signed-in user)
NAV: tuple[tuple[str, str, str, str | None], ...] = (
    ("overview", "/dashboard", "Overview", "chargers:read"),
    ("customers", "/dashboard/customers", "Customers", "customers:read"),
    ("sessions", "/dashboard/sessions", "Sessions", "sessions:read"),
    ("earnings", "/dashboard/earnings", "Earnings", "sessions:read"),
    ("statements", "/dashboard/statements", "Statements", "statements:read"),
    ("scans", "/dashboard/scans", "MID scans", "scan:read"),
    ("webhooks", "/dashboard/webhooks", "Webhooks", "webhooks:write"),
    ("keys", "/dashboard/keys", "API keys", "keys:write"),
)


async def page(
    who: Member,
    template: str,
    active: str,
    *,
    title: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """`template` in the signed-in frame, `active` the section shown as current."""
    brand = await who.data.branding()
    nav = [
        {"href": href, "label": label, "current": key == active}
        for key, href, label, scope in NAV
        if scope is None or who.can(scope)
    ]
    return render(
        template,
        status=status,
        headers=headers,
        me=who,
        brand=brand,
        nav=nav,
        title=title,
        **context,
    )
