"""`/dashboard`: the portfolio overview, refreshed live.

Per charger of the partner (`ChargerData.list_chargers`, by identity, `PAGE_SIZE` a page):
whether it is connected now, its last boot's meter, its meter class, the customer it is linked
to, and whether it qualifies for ERE, as a MID scan of it would answer now
(`ScanData.assess`, storing nothing; with the reason). The database keeps no live connection
state, so "connected now" means charging (an active session) or seen (`last_seen`, the latest
event the proxy recorded) within `CONNECTED_WINDOW`. `/dashboard/live/chargers` is the same
table as a fragment, which the page's script fetches every few seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from starlette.datastructures import URL

from proxy.api.dashboard.auth import Member, member
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.dashboard.rendering import render
from proxy.ere.core.mid_scan import Verdict

__all__ = ["CONNECTED_WINDOW", "PAGE_SIZE", "VERDICT_LABELS", "router"]

CONNECTED_WINDOW = timedelta(minutes=15)
PAGE_SIZE = 100
LIVE_SECONDS = 5
# verdict → (label, tone of its tag)
VERDICT_LABELS = {
    Verdict.QUALIFIES: ("Qualifies", "good"),
    Verdict.NEEDS_CHECK: ("Needs a check", "warn"),
    Verdict.DOES_NOT_QUALIFY: ("Does not qualify", "bad"),
}

router = APIRouter(route_class=PageRoute, include_in_schema=False)
After = Annotated[str | None, Query(max_length=64)]


async def _portfolio(who: Member, after: str | None) -> dict[str, Any]:
    who.require("chargers:read")
    chargers, last = await who.data.chargers.list_chargers(after, PAGE_SIZE)
    verdicts = await who.data.scans.assess([charger["identity"] for charger in chargers])
    now = datetime.now(UTC)
    rows = []
    for charger in chargers:
        seen, boot = charger["last_seen"], charger["last_boot"] or {}
        charging = charger["current_session"] is not None
        verdict = verdicts[charger["identity"]]
        label, tone = VERDICT_LABELS[verdict.verdict]
        link = charger["current_link"]
        rows.append(
            {
                "identity": charger["identity"],
                "charging": charging,
                "connected": charging or (seen is not None and now - seen <= CONNECTED_WINDOW),
                "last_seen": seen,
                "meter_type": boot.get("meter_type"),
                "meter_serial": boot.get("meter_serial"),
                "meter_class": charger["meter_class"],
                "verdict": verdict.verdict.value,
                "verdict_label": label,
                "verdict_tone": tone,
                "reason": verdict.text,
                "customer_id": None if link is None else link["customer_id"],
            }
        )
    summary = {
        "chargers": len(rows),
        "connected": sum(row["connected"] for row in rows),
        "charging": sum(row["charging"] for row in rows),
        "qualifies": sum(row["verdict"] == Verdict.QUALIFIES for row in rows),
        "needs_check": sum(row["verdict"] == Verdict.NEEDS_CHECK for row in rows),
    }
    after_query = URL("/dashboard/live/chargers").include_query_params(after=after or "")
    return {
        "rows": rows,
        "summary": summary,
        "next_after": last,
        "after": after,
        "as_of": now,
        "live_url": str(after_query) if after else "/dashboard/live/chargers",
        "window_minutes": int(CONNECTED_WINDOW.total_seconds() // 60),
    }


@router.get("/dashboard")
async def overview(who: Annotated[Member, Depends(member)], after: After = None) -> HTMLResponse:
    portfolio = await _portfolio(who, after)
    return await page(
        who,
        "overview.html",
        "overview",
        title="Portfolio overview",
        live_seconds=LIVE_SECONDS,
        **portfolio,
    )


@router.get("/dashboard/live/chargers")
async def live_chargers(
    who: Annotated[Member, Depends(member)], after: After = None
) -> HTMLResponse:
    return render("_chargers.html", **await _portfolio(who, after))
