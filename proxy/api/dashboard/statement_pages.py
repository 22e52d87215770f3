"""`/dashboard/statements`: the customers' quarterly statements with their payouts, each to open
as the statement the customer is sent (HTML) or to download (PDF), and a quarter's payouts as
CSV.

Statements and payouts are `StatementData`'s, as `/v1/statements` and `/v1/payouts` list them;
the documents are the API's own (`proxy.api.statements.statement_document`: same rendering, same
headers, 409 before the payout run made them), authorised by the dashboard session instead of
a key. The CSV has one row per customer's payout of the quarter; a cell that a spreadsheet
would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is
prefixed with `'`, so a customer's name cannot run in the partner's spreadsheet.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from proxy.api.cursors import encode_key_cursor
from proxy.api.dashboard.auth import Member, member
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.problems import Problem
from proxy.api.statement_data import parse_statement_id
from proxy.api.statements import list_filter, statement_document

__all__ = ["CSV_COLUMNS", "router", "spreadsheet_safe"]

PAGE_SIZE = 50
_CSV_PAGE = 100
MAX_CSV_ROWS = 100_000
CSV_COLUMNS = (
    "quarter",
    "customer_id",
    "customer_name",
    "net",
    "status",
    "amount",
    "carried_over",
    "execution_date",
    "end_to_end_id",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Text = Annotated[str | None, Query(max_length=64)]


def spreadsheet_safe(value: Any) -> str:
    """A CSV cell that no spreadsheet runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


@router.get("/dashboard/statements")
async def statements(
    who: Annotated[Member, Depends(member)],
    quarter: Text = None,
    customer: Text = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    who.require("statements:read")
    try:
        wanted, customer_id, after = list_filter(quarter or None, customer or None, cursor)
    except Problem:
        raise Problem(400, "write the quarter like 2026Q2, and a customer by their id") from None
    rows, last = await who.data.statements.list_statements(wanted, customer_id, after, PAGE_SIZE)
    return await page(
        who,
        "statements.html",
        "statements",
        title="Statements and payouts",
        rows=rows,
        quarter=wanted or "",
        customer=customer_id or "",
        cursor=cursor,
        next_cursor=None if last is None else encode_key_cursor(last),
        can_payouts=who.can("payouts:read"),
    )


@router.get("/dashboard/statements/{statement_id}/{kind}")
async def statement_file(
    request: Request,
    who: Annotated[Member, Depends(member)],
    statement_id: Annotated[str, Path(max_length=80)],
    kind: Literal["html", "pdf"],
) -> Response:
    who.require("statements:read")
    view = await who.data.statements.get_statement(statement_id)
    return await statement_document(view, kind, request.app.state.statement_pdfs)


@router.get("/dashboard/payouts.csv")
async def payouts_csv(who: Annotated[Member, Depends(member)], quarter: Text = None) -> Response:
    who.require("payouts:read")
    wanted, _, _ = list_filter(quarter or None, None, None)
    if wanted is None:
        raise Problem(400, "choose the quarter of the payouts")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    after, written = None, 0
    while written < MAX_CSV_ROWS:
        rows, last = await who.data.statements.list_payouts(wanted, None, after, _CSV_PAGE)
        for row in rows:
            transfer = row["transfer"] or {}
            carried = row["carried_over"] or {}
            values = (
                row["quarter"],
                row["customer_id"],
                row["customer_name"],
                row["net"],
                row["status"],
                row["amount"],
                carried.get("amount"),
                row["execution_date"],
                transfer.get("end_to_end_id"),
            )
            writer.writerow([spreadsheet_safe(value) for value in values])
        written += len(rows)
        if last is None:
            break
        after = parse_statement_id(last)
        if after is None:
            break
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="payouts-{wanted}.csv"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
