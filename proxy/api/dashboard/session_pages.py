"""`/dashboard/sessions`: the partner's charging sessions, newest first, with their eligibility
and its reason, refreshed live.

The sessions are those `GET /v1/sessions` lists (`SessionData.list_sessions`: of chargers whose
link period at the session's end belongs to one of the partner's customers), filtered by
customer and charger, `PAGE_SIZE` a page. The first page is refreshed every few seconds from
`/dashboard/live/sessions` (the same table as a fragment), so a session shows up while the
charger is still charging; a later page stays as it was loaded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from starlette.datastructures import URL

from proxy.api.dashboard.auth import Member, member
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.dashboard.rendering import render
from proxy.api.session_data import SessionFilter

__all__ = ["PAGE_SIZE", "router"]

PAGE_SIZE = 50
LIVE_SECONDS = 3
# eligibility status → tone of its tag
TONES = {"eligible": "good", "ineligible": "bad"}

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Text = Annotated[str | None, Query(max_length=64)]


async def _sessions(
    who: Member, customer: str | None, charger: str | None, before: int | None
) -> dict[str, Any]:
    who.require("sessions:read")
    customer, charger = customer or None, charger or None
    where = SessionFilter(customer=customer, charger=charger)
    sessions, last = await who.data.sessions.list_sessions(where, before, PAGE_SIZE)
    filters = {"customer": customer or "", "charger": charger or ""}
    return {
        "sessions": sessions,
        "tones": TONES,
        "filters": filters,
        "before": before,
        "next_before": None if last is None else last["id"],
        "as_of": datetime.now(UTC),
        "live_url": str(URL("/dashboard/live/sessions").include_query_params(**filters)),
    }


@router.get("/dashboard/sessions")
async def sessions(
    who: Annotated[Member, Depends(member)],
    customer: Text = None,
    charger: Text = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    listed = await _sessions(who, customer, charger, before)
    return await page(
        who, "sessions.html", "sessions", title="Sessions", live_seconds=LIVE_SECONDS, **listed
    )


@router.get("/dashboard/live/sessions")
async def live_sessions(
    who: Annotated[Member, Depends(member)], customer: Text = None, charger: Text = None
) -> HTMLResponse:
    return render("_sessions.html", **await _sessions(who, customer, charger, None))
