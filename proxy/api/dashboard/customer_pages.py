"""`/dashboard/customers`: the partner's customers with their enrolment state, enrolment by form
(admins), and one customer with their mandates and this year's energy by month.

Enrolment goes through `PartnerData.enrol`, as `POST /v1/customers` does: the same rules, the
same audit entry and webhook event, this year's mandate recorded with channel `api` and the
user as its actor. The form's idempotency key makes a repeated submit show the customer the
first one enrolled. A refused enrolment shows the form again with what is wrong per field; an
EAN enrolled already is refused without saying by whom.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from proxy.api.cursors import decode_cursor
from proxy.api.dashboard.auth import Member, Posted, member, posted_form
from proxy.api.dashboard.enrolment_state import enrolment_state
from proxy.api.dashboard.forms import (
    ENROLMENT_FIELDS,
    FormErrors,
    enrolment_body,
    form_key,
    new_form_key,
)
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.dashboard.rendering import PAGE_HEADERS
from proxy.api.idempotency import request_digest
from proxy.api.problems import Problem
from proxy.ere.core.quarters import DUTCH_TIME

__all__ = ["router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE_SIZE = 50
_FORM_FIELDS = (
    *(name for name, *_ in ENROLMENT_FIELDS),
    "language",
    "consent_text_version",
    "consent_reference",
    "consent_at",
)


async def _customers_page(
    who: Member,
    cursor: str | None,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    who.require("customers:read")
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise Problem(400, "this page of customers does not exist") from None
    customers, next_cursor = await who.data.list_customers(after, PAGE_SIZE)
    today = datetime.now(DUTCH_TIME).date()
    rows = [
        customer | {"state": enrolment_state(customer["mandates"], today)} for customer in customers
    ]
    return await page(
        who,
        "customers.html",
        "customers",
        title="Customers",
        status=status,
        rows=rows,
        next_cursor=next_cursor,
        cursor=cursor,
        fields=ENROLMENT_FIELDS,
        form=form or {},
        errors=errors or {},
        idem=new_form_key(),
        can_enrol=who.can("customers:write"),
    )


@router.get("/dashboard/customers")
async def customers(
    who: Annotated[Member, Depends(member)],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    return await _customers_page(who, cursor)


@router.post("/dashboard/customers")
async def enrol(posted: Annotated[Posted, Depends(posted_form)]) -> Response:
    who = posted.member
    who.require("customers:write")
    shown = {
        name: value[:1000]
        for name in _FORM_FIELDS
        if isinstance(value := posted.form.get(name), str)
    }
    try:
        key = form_key(posted.form)
        body = enrolment_body(posted.form, datetime.now(UTC))
    except FormErrors as refused:
        return await _customers_page(who, None, form=shown, errors=refused.errors, status=422)
    # The digest is of the form as sent: a consent time left empty ("now") must not make the
    # same form sent again a second later (a double click, a browser's retry) another enrolment.
    sent = body.model_dump(mode="json")
    sent["consent"]["accepted_at"] = shown.get("consent_at") or None
    digest = request_digest("POST", "/dashboard/customers", sent)
    try:
        answer = await who.data.enrol(body, key, digest)
    except Problem as problem:
        if problem.status not in (409, 422):
            raise
        errors = {e["field"]: e["detail"] for e in problem.errors or []} or {"form": problem.detail}
        return await _customers_page(who, None, form=shown, errors=errors, status=problem.status)
    if answer.status != 201:  # a form key reused for another enrolment
        errors = {"form": "this form was sent before with other details; reload it"}
        return await _customers_page(who, None, form=shown, errors=errors, status=409)
    target = f"/dashboard/customers/{answer.body['id']}?enrolled=1"
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


@router.get("/dashboard/customers/{customer_id}")
async def customer(
    who: Annotated[Member, Depends(member)],
    customer_id: Annotated[str, Path(max_length=64)],
    enrolled: Annotated[int, Query(ge=0, le=1)] = 0,
) -> HTMLResponse:
    who.require("customers:read")
    found: dict[str, Any] = await who.data.get_customer(customer_id)
    today = datetime.now(DUTCH_TIME).date()
    energy = None
    if who.can("sessions:read"):
        energy = await who.data.energy.customer_energy(customer_id, today.year, "month")
    return await page(
        who,
        "customer.html",
        "customers",
        title=found["name"],
        customer=found,
        state=enrolment_state(found["mandates"], today),
        energy=energy,
        enrolled=bool(enrolled),
    )
