"""`/v1/statements`: your customers' quarterly statements, listed with their figures and payout
status, and each one in full or as the document the customer is sent. Needs `statements:read`.

Lists are newest quarter first, then by customer, filtered by `quarter` (`2026Q3`) and
`customer_id`, in pages with an opaque `cursor` and `limit` (1-100, default 50). One statement
is JSON by default; `Accept: text/html` or `application/pdf`, or `?format=html|pdf` (for
links; it wins over `Accept`), gives the statement e-mail's rendering with your branding, in
the customer's language, or the same as a PDF. Those documents exist once the quarter's payout
run made the statement: before, they are a 409 (see `proxy.api.statement_data`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from proxy.api.chargers import bad_cursor
from proxy.api.cursors import decode_key_cursor, encode_key_cursor
from proxy.api.dependencies import partner_data
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON, Problem, field_error
from proxy.api.statement_data import StatementView, parse_quarter, parse_statement_id
from proxy.api.statement_documents import StatementPdfs
from proxy.api.statement_models import StatementOut, StatementPage
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.ere.core.statement_mail import render_html

__all__ = ["ListFilter", "list_filter", "router", "statement_document"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 409, 422)
}
_DOCUMENTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the statement: JSON, or its document as HTML or PDF",
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    409: {
        "description": "the statement's documents are made by the quarter's payout run: not yet",
        "content": {PROBLEM_JSON: {}},
    },
}
Format = Literal["json", "html", "pdf"]
_MEDIA: dict[str, Format] = {
    "application/json": "json",
    "text/html": "html",
    "application/pdf": "pdf",
}
ListFilter = tuple[str | None, str | None, tuple[str, str] | None]
# The documents are served from the API's own origin: the HTML runs no script, loads nothing
# but images (the partner's logo) and its inline styles, and is framed by no one; neither
# document is ever sniffed as another type.
_DOCUMENT_HEADERS = {
    "Vary": "Accept",
    "X-Content-Type-Options": "nosniff",
}
_HTML_POLICY = (
    "default-src 'none'; img-src https:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(prefix="/v1/statements", tags=["statements"], responses=_ERRORS)


def list_filter(quarter: str | None, customer_id: str | None, cursor: str | None) -> ListFilter:
    """(quarter, customer id, the statement a page starts after) of a list request; 422 for a
    malformed quarter or customer id, 400 for a cursor this API did not make."""
    if quarter is not None and parse_quarter(quarter) is None:
        raise Problem(
            422,
            "quarter: not a quarter; write it like 2026Q3",
            title="Invalid request",
            type_="urn:ere-proxy:problem:invalid-field",
            errors=[{"field": "quarter", "detail": "write it like 2026Q3"}],
        )
    if customer_id is not None:
        try:
            validate_id(customer_id, "customer_id")
        except AdminInputError as error:
            raise field_error(error, {}) from None
    after = None
    if cursor is not None:
        try:
            after = parse_statement_id(decode_key_cursor(cursor))
        except ValueError:
            raise bad_cursor() from None
        if after is None:
            raise bad_cursor()
    return quarter, customer_id, after


def chosen_format(accept: str | None, asked: Format | None) -> Format:
    """The representation to answer with: `asked` (`?format=`) if given, else the supported
    media type `accept` rates highest (ties: the first named), else JSON."""
    if asked is not None:
        return asked
    best: tuple[float, Format] = (0.0, "json")
    for media_range in (accept or "").split(",")[:32]:
        media, *params = (part.strip() for part in media_range.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = _MEDIA.get(media.lower())
        if kind is not None and quality > best[0]:
            best = (quality, kind)
    return best[1]


@router.get("", response_model=StatementPage)
async def list_statements(
    data: Annotated[PartnerData, Depends(partner_data("statements:read"))],
    quarter: Annotated[str | None, Query(max_length=16, description="e.g. 2026Q3")] = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Statements of your customers: per quarter and customer the kWh, ERE, gross, our fee
    (VAT included), net and the payout status."""
    wanted_quarter, customer, after = list_filter(quarter, customer_id, cursor)
    rows, last = await data.statements.list_statements(wanted_quarter, customer, after, limit)
    return {"data": rows, "next_cursor": None if last is None else encode_key_cursor(last)}


@router.get("/{statement_id}", response_model=StatementOut, responses=_DOCUMENTS)
async def get_statement(
    statement_id: Annotated[str, Path(max_length=80, description="`<quarter>-<customer id>`")],
    data: Annotated[PartnerData, Depends(partner_data("statements:read"))],
    request: Request,
    response: Response,
    format: Annotated[Format | None, Query(description="wins over Accept")] = None,
) -> Any:
    """One statement: every line (its own kWh, ERE, price, gross, fee rate and why, fee, net; a
    correction names the quarter it corrects and the sessions whose kWh changed), the totals,
    the fee's invoice, what was carried in or over, and the payout (paid in which run and
    transfer, carried over and why, or pending). As HTML or PDF: the statement the customer is
    sent."""
    view = await data.statements.get_statement(statement_id)
    kind = chosen_format(request.headers.get("accept"), format)
    if kind == "json":
        response.headers["Vary"] = "Accept"
        return view.body
    return await statement_document(view, kind, request.app.state.statement_pdfs)


async def statement_document(
    view: StatementView, kind: Literal["html", "pdf"], pdfs: StatementPdfs
) -> Response:
    """The statement as HTML or PDF; 409 before the payout run made it. A PDF is rendered in a
    worker thread, a few at a time, and kept while unchanged (`proxy.api.statement_documents`:
    one of many sessions takes a while)."""
    if view.run_at is None:
        raise Problem(
            409,
            "this statement's payout run is not made yet; its HTML and PDF exist from then on",
            title="Statement pending",
            type_="urn:ere-proxy:problem:statement-pending",
        )
    made = view.made
    name = f"statement-{made.statement.statement_id}"
    headers = dict(_DOCUMENT_HEADERS)
    if kind == "html":
        html = render_html(made.statement, made.branding, language=made.language)
        headers["Content-Disposition"] = f'inline; filename="{name}.html"'
        headers["Content-Security-Policy"] = _HTML_POLICY
        return HTMLResponse(html, headers=headers)
    pdf = await pdfs.pdf(made, view.run_at)
    headers["Content-Disposition"] = f'attachment; filename="{name}.pdf"'
    return Response(pdf, media_type="application/pdf", headers=headers)
