"""`POST /v1/sessions/batch` and `POST /v1/sessions/imports`: sessions a partner supplies for
chargers whose platform speaks no OCPI. Needs `sessions:write` and an `Idempotency-Key`.

A batch is JSON, up to 1,000 sessions; an import is a CSV file (`text/csv`, within the body
cap) in one of the layouts of `proxy.ingest.csv_formats`, read as the query says. Either is
stored whole or not at all (`proxy.api.session_push_data`): every bad item or row is named in
the 422. Every 1,000 sessions, or 64 KiB of CSV, count as one request more against the key's
rate limit. The answer is 201 when anything was stored, 200 when everything had been before.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from proxy.api.dependencies import partner_data
from proxy.api.idempotency import check_key, request_digest
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON, Problem
from proxy.api.session_push_data import ImportRequest, import_options
from proxy.api.session_push_models import ImportOut, SessionBatchIn, SessionBatchOut
from proxy.api.throttle import Throttle
from proxy.ingest.csv_formats import parse_charger_map

__all__ = ["BYTES_PER_REQUEST", "SESSIONS_PER_REQUEST", "router"]

SESSIONS_PER_REQUEST = 1000
BYTES_PER_REQUEST = 64 * 1024
_MAX_MAPPED = 100

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 409, 413, 415, 422)
}
_IDEMPOTENCY = Header(alias="Idempotency-Key", description="unique per operation; repeats replay")
_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "the CSV file, UTF-8, with its header row",
    }
}

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=_ERRORS)


@router.post(
    "/batch",
    status_code=201,
    response_model=SessionBatchOut,
    responses={200: {"model": SessionBatchOut, "description": "every session was sent before"}},
)
async def push_sessions(
    body: SessionBatchIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("sessions:write"))],
    idempotency_key: Annotated[str | None, _IDEMPOTENCY] = None,
) -> JSONResponse:
    """Store sessions of your chargers that your platform recorded (for a platform without
    OCPI): up to 1,000, all or none. Each is checked (times with an offset, start before stop,
    energy plausible at up to 1 MW, stop − start of the meter equal to the energy, one of your
    chargers) and so is the batch (an id twice, overlapping sessions of a charger, a meter
    going backwards): any bad item is a 422 naming every one (`sessions[i].field`). A session
    you sent before under the same `id` is `unchanged`; under the same `id` with other content
    the batch is a 409. A session of a charging event recorded from another source (the
    charger's own OCPP traffic, first of all) is stored as a `duplicate`, never counted."""
    key = check_key(idempotency_key)
    throttle: Throttle = request.app.state.throttle
    throttle.charge(request, data.caller.key_id, len(body.sessions) // SESSIONS_PER_REQUEST)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.session_push.push(body.sessions, key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.post(
    "/imports",
    status_code=201,
    response_model=ImportOut,
    responses={200: {"model": ImportOut, "description": "every row was imported before"}},
    openapi_extra=_CSV_BODY,
)
async def import_sessions(
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("sessions:write"))],
    format: Annotated[
        Literal["evcc", "eflux", "generic"],
        Query(description="the file's layout (see the README: columns of each)"),
    ],
    timezone: Annotated[
        str, Query(max_length=64, description="of times without an offset in the file")
    ] = "Europe/Amsterdam",
    charger: Annotated[
        str | None, Query(max_length=48, description="the charger of every row")
    ] = None,
    charger_map: Annotated[
        list[str] | None,
        Query(
            max_length=_MAX_MAPPED,
            description="`NAME=IDENTITY`: the charger a loadpoint (evcc) or charger name of "
            "the file is; repeat for each",
        ),
    ] = None,
    name: Annotated[
        str,
        Query(
            min_length=1,
            max_length=100,
            description="the file's name: a row without an id of its own is `<name>:<line>`",
        ),
    ] = "import.csv",
    dst_fold: Annotated[
        Literal["refuse", "earlier", "later"],
        Query(description="a local time the clocks passed twice: refused, or which one"),
    ] = "refuse",
    idempotency_key: Annotated[str | None, _IDEMPOTENCY] = None,
) -> JSONResponse:
    """Import a CSV file of sessions (evcc's session export, a CPMS's CDR export, or the
    generic layout): every row is checked as a pushed session is, and the rows together
    (repeats, overlaps per charger, meters going backwards); any bad row is a 422 naming each
    by its line, and nothing is stored. Rows imported before are `unchanged`."""
    key = check_key(idempotency_key)
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type not in ("text/csv", "text/plain"):
        raise Problem(415, "the body must be a CSV file: Content-Type text/csv")
    if not name.isprintable():
        raise _bad_query("name", "must be printable text")
    try:
        chargers = parse_charger_map(charger_map or [])
    except ValueError as error:
        raise _bad_query("charger_map", str(error)) from None
    body = await request.body()
    throttle: Throttle = request.app.state.throttle
    throttle.charge(request, data.caller.key_id, len(body) // BYTES_PER_REQUEST)
    options = import_options(data.partner_id, name, timezone, charger, chargers, dst_fold)
    digest = request_digest(
        "POST", request.url.path, [str(request.url.query), hashlib.sha256(body).hexdigest()]
    )
    answer = await data.session_push.import_csv(ImportRequest(body, format, options), key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


def _bad_query(field: str, detail: str) -> Problem:
    return Problem(
        422,
        f"{field}: {detail}",
        title="Invalid request",
        type_="urn:ere-proxy:problem:invalid-field",
        errors=[{"field": field, "detail": detail}],
    )
