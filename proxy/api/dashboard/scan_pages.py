"""`/dashboard/scans`: MID scans of a portfolio (admins run them) and their reports, with each
charger's verdict and the reason for it.

A scan goes through `ScanData.run`, as `POST /v1/scans` does: the same verdicts, the same stored
report and audit entry (under the user). The form takes the partner's own chargers (every one
the overview lists) and/or lines of `identity, meter type, meter serial, kWh a year`
(`proxy.api.dashboard.forms.scan_body`); its idempotency key makes a repeated submit show the
first report. Reports are listed newest first and never change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from proxy.api.cursors import decode_cursor
from proxy.api.dashboard.auth import Member, Posted, member, posted_form
from proxy.api.dashboard.forms import FormErrors, form_key, new_form_key, scan_body
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.overview_pages import VERDICT_LABELS
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.dashboard.rendering import PAGE_HEADERS
from proxy.api.idempotency import request_digest
from proxy.api.problems import Problem
from proxy.api.scan_models import MAX_CHARGERS
from proxy.ere.core.mid_scan import Verdict
from proxy.ere.core.quarters import DUTCH_TIME

__all__ = ["router"]

PAGE_SIZE = 50
_LISTING = 1000  # chargers read a page at a time for "all my chargers"

router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def _scans_page(
    who: Member,
    cursor: str | None,
    *,
    portfolio: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    who.require("scan:read")
    before = None
    if cursor is not None:
        try:
            before = decode_cursor(cursor)
        except ValueError:
            raise Problem(400, "this page of scans does not exist") from None
    scans, next_cursor = await who.data.scans.list_scans(before, PAGE_SIZE)
    return await page(
        who,
        "scans.html",
        "scans",
        title="MID scans",
        status=status,
        scans=scans,
        cursor=cursor,
        next_cursor=next_cursor,
        can_scan=who.can("scan:write"),
        portfolio=portfolio,
        errors=errors or {},
        idem=new_form_key(),
        verdicts=[(v.value, VERDICT_LABELS[v][0]) for v in Verdict],
    )


@router.get("/dashboard/scans")
async def scans(
    who: Annotated[Member, Depends(member)],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    return await _scans_page(who, cursor)


async def _all_identities(who: Member) -> list[str]:
    identities: list[str] = []
    after = None
    while len(identities) <= MAX_CHARGERS:
        chargers, after = await who.data.chargers.list_chargers(after, _LISTING)
        identities += [charger["identity"] for charger in chargers]
        if after is None:
            break
    return identities


@router.post("/dashboard/scans")
async def run_scan(posted: Annotated[Posted, Depends(posted_form)]) -> Response:
    who = posted.member
    who.require("scan:write")
    text = posted.form.get("portfolio")
    text = text if isinstance(text, str) else ""
    try:
        key = form_key(posted.form)
        mine = await _all_identities(who) if posted.form.get("all_chargers") == "yes" else []
        body = scan_body(text, mine)
    except FormErrors as refused:
        return await _scans_page(
            who, None, portfolio=text[:20_000], errors=refused.errors, status=422
        )
    digest = request_digest("POST", "/dashboard/scans", body.model_dump(mode="json"))
    try:
        answer = await who.data.scans.run(body, key, digest)
    except Problem as problem:
        if problem.status not in (409, 422):
            raise
        errors = {e["field"]: e["detail"] for e in problem.errors or []} or {
            "portfolio": problem.detail
        }
        return await _scans_page(
            who, None, portfolio=text[:20_000], errors=errors, status=problem.status
        )
    if answer.status != 201:
        errors = {"form": "this form was sent before with other chargers; reload it"}
        return await _scans_page(who, None, portfolio=text[:20_000], errors=errors, status=409)
    target = f"/dashboard/scans/{answer.body['id']}"
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


@router.get("/dashboard/scans/{scan_id}")
async def scan_report(
    who: Annotated[Member, Depends(member)], scan_id: Annotated[str, Path(max_length=64)]
) -> HTMLResponse:
    who.require("scan:read")
    report: dict[str, Any] = await who.data.scans.get_scan(scan_id)
    items = [
        item
        | {
            "label": VERDICT_LABELS[Verdict(item["verdict"])][0],
            "tone": VERDICT_LABELS[Verdict(item["verdict"])][1],
        }
        for item in report["items"]
    ]
    return await page(
        who,
        "scan.html",
        "scans",
        title=f"MID scan of {report['created_at'].astimezone(DUTCH_TIME):%Y-%m-%d %H:%M}",
        report=report,
        items=items,
        verdicts=[(v.value, VERDICT_LABELS[v][0], VERDICT_LABELS[v][1]) for v in Verdict],
    )
