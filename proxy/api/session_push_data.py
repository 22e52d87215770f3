"""Sessions a partner supplies through the API: a pushed batch, a CSV import. All or nothing.

`push(items, ...)` reads each item of a batch (`SessionPushIn`, then the rules of
`proxy.ingest.records` and, between the items, `proxy.ingest.batch_checks`) and refuses the
whole batch if any item is bad: 422 with every bad item in `errors`, each named
`sessions[i].field`. `import_csv(body, ...)` does the same for a file
(`proxy.ingest.csv_import.check_file`, in a worker thread: a large file is seconds of work), each
bad row named by its line. What passes is stored in one transaction (`proxy.ingest.store.
record_sessions`, source `api` or `csv`) with the audit entry and the idempotent answer; if any
session turns out not storable there (a charger that is not the partner's: 422 naming no one;
an id sent before with other content: 409), nothing is stored.

Errors: `Problem` (409, 415, 422); database errors pass through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import trio
from pydantic import ValidationError

from proxy.api.audit import record_write
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import Caller
from proxy.api.problems import Problem
from proxy.api.session_push_models import SessionPushIn
from proxy.ingest.batch_checks import check_batch
from proxy.ingest.cells import shown
from proxy.ingest.csv_formats import ImportOptions
from proxy.ingest.csv_import import CheckedFile, RowProblem, check_file
from proxy.ingest.records import ExternalSession, RecordError, check
from proxy.ingest.store import IngestResult, record_sessions
from proxy.store.connection import Connection

__all__ = ["MAX_IMPORT_ROWS", "ImportRequest", "SessionPush", "import_options", "read_batch"]

MAX_IMPORT_ROWS = 200_000
# The API's name of each field of a record (`RecordError.field`).
_FIELDS = {
    "source_ref": "id",
    "identity": "charger",
    "energy_wh": "energy_kwh",
    "meter_start_wh": "meter_start_kwh",
    "meter_stop_wh": "meter_stop_kwh",
}
_NOT_YOURS = "is not one of your chargers (register it, link it, or ask for it to be granted)"
_OTHER_CONTENT = "this id was sent before with other content; a session is never changed"


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """A CSV file and how to read it."""

    body: bytes
    format: str
    options: ImportOptions


def _invalid(errors: list[dict[str, str]], what: str) -> Problem:
    """422 listing `errors`; `what` names the items (`sessions`, `rows`)."""
    return Problem(
        422,
        f"{len(errors)} problem{'s' if len(errors) > 1 else ''} in the {what}; nothing was"
        " stored: " + "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:3]),
        title="Invalid request",
        type_="urn:ere-proxy:problem:invalid-field",
        errors=errors,
    )


def _item(raw: Any, partner_id: str, now: datetime) -> ExternalSession:
    """One pushed item as a session; ValidationError or RecordError if it is not one."""
    item = SessionPushIn.model_validate(raw)
    session = ExternalSession(
        source="api",
        source_ref=item.id,
        partner_id=partner_id,
        identity=item.charger,
        transaction_id=item.transaction_id,
        started_at=item.started_at,
        stopped_at=item.stopped_at,
        energy_wh=item.energy_kwh * 1000,
        meter_start_wh=None if item.meter_start_kwh is None else item.meter_start_kwh * 1000,
        meter_stop_wh=None if item.meter_stop_kwh is None else item.meter_stop_kwh * 1000,
        signed_data=item.signed_data,
    )
    check(session, now)
    return session


def read_batch(items: Sequence[Any], partner_id: str, now: datetime) -> list[ExternalSession]:
    """The sessions of a batch, or 422 naming every bad item's field."""
    sessions: list[ExternalSession] = []
    errors: list[dict[str, str]] = []
    for index, raw in enumerate(items):
        name = f"sessions[{index}]"
        try:
            sessions.append(_item(raw, partner_id, now))
        except ValidationError as error:
            for found in error.errors(include_url=False, include_input=False):
                where = "".join(f".{part}" for part in found["loc"])
                errors.append({"field": name + where, "detail": str(found["msg"])})
        except RecordError as error:
            field = _FIELDS.get(error.field, error.field)
            errors.append({"field": f"{name}.{field}", "detail": error.detail})
    if not errors:
        for problem in check_batch(sessions):
            field = _FIELDS.get(problem.field, problem.field)
            said = problem.detail.replace("{other}", f"sessions[{problem.other}]")
            errors.append({"field": f"sessions[{problem.position}].{field}", "detail": said})
    if errors:
        raise _invalid(errors, "sessions")
    return sessions


def _refusals(result: IngestResult, named: Callable[[int, str], dict[str, str]]) -> None:
    """Raise (rolling the transaction back) if any session could not be stored as it is;
    `named(index, field)` is where an error points (its `field`, perhaps a `detail` prefix)."""
    refused, conflicts = [], []
    for index, item in enumerate(result.outcomes):
        if item.outcome in ("refused", "invalid"):
            assert item.error is not None
            field = _FIELDS.get(item.error.field, item.error.field)
            detail = _NOT_YOURS if item.outcome == "refused" else item.error.detail
            where = named(index, field)
            refused.append({"field": where["field"], "detail": where.get("detail", "") + detail})
        elif item.outcome == "conflict":
            where = named(index, "id")
            detail = where.get("detail", "") + _OTHER_CONTENT
            conflicts.append({"field": where["field"], "detail": detail})
    if refused:
        raise _invalid(refused, "sessions")
    if conflicts:
        raise Problem(
            409,
            f"{len(conflicts)} of the ids were sent before with other content; nothing was stored",
            title="Session changed",
            type_="urn:ere-proxy:problem:session-changed",
            errors=conflicts,
        )


def _counts(result: IngestResult) -> dict[str, int]:
    return {
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "unchanged": result.unchanged,
    }


def _status(result: IngestResult) -> int:
    return 201 if result.inserted or result.duplicates else 200


class SessionPush:
    """One partner's supplied sessions (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller) -> None:
        self._db, self.caller = db, caller

    async def push(self, items: Sequence[Any], idem_key: str, digest: str) -> StoredAnswer:
        """Store a batch; the answer (stored for `idem_key`)."""
        partner = self.caller.partner_id
        sessions = read_batch(items, partner, datetime.now(UTC))
        async with self._db.transaction() as tx:
            stored = await claim(tx, partner, idem_key, digest)
            if stored is not None:
                return stored
            result = await record_sessions(tx, sessions)
            _refusals(result, lambda i, field: {"field": f"sessions[{i}].{field}"})
            body = _counts(result) | {
                "results": [
                    {
                        "index": index,
                        "id": session.source_ref,
                        "outcome": item.outcome,
                        "session_id": item.session_id,
                        "duplicate_of": item.duplicate_of,
                    }
                    for index, (session, item) in enumerate(zip(sessions, result.outcomes))
                ]
            }
            summary = _counts(result) | {"sessions": len(sessions)}
            await record_write(
                tx, self.caller, "sessions.push", "session_batch", idem_key, after=summary
            )
            answer = StoredAnswer(_status(result), {}, body)
            await remember(tx, partner, idem_key, digest, answer)
        return answer

    async def import_csv(self, request: ImportRequest, idem_key: str, digest: str) -> StoredAnswer:
        """Import a CSV file; the answer (stored for `idem_key`)."""
        checked: CheckedFile = await trio.to_thread.run_sync(_check, request)
        if checked.problems:
            raise _invalid([_row_error(problem) for problem in checked.problems], "rows")
        if not checked.sessions:
            raise Problem(
                422,
                "the file has no rows",
                title="Invalid request",
                type_="urn:ere-proxy:problem:invalid-field",
                errors=[{"field": "body", "detail": "has a header but no rows"}],
            )
        partner = self.caller.partner_id
        async with self._db.transaction() as tx:
            stored = await claim(tx, partner, idem_key, digest)
            if stored is not None:
                return stored
            result = await record_sessions(tx, checked.sessions)
            lines = checked.lines
            _refusals(
                result, lambda i, field: {"field": f"line {lines[i]}", "detail": f"{field}: "}
            )
            body = {"rows": checked.rows} | _counts(result)
            after = body | {"format": request.format, "file": request.options.file_name}
            await record_write(
                tx, self.caller, "sessions.import", "session_import", idem_key, after=after
            )
            answer = StoredAnswer(_status(result), {}, body)
            await remember(tx, partner, idem_key, digest, answer)
        return answer


def _check(request: ImportRequest) -> CheckedFile:
    return check_file(
        request.body.splitlines(keepends=True),
        request.format,
        request.options,
        now=datetime.now(UTC),
        max_rows=MAX_IMPORT_ROWS,
    )


def _row_error(problem: RowProblem) -> dict[str, str]:
    column = f" {shown(problem.column)}" if problem.column else ""
    return {"field": f"line {problem.line}{column}", "detail": problem.detail}


def import_options(
    partner_id: str,
    file_name: str,
    timezone: str,
    charger: str | None,
    chargers: dict[str, str],
    fold: str,
) -> ImportOptions:
    """The options of an import request; 422 for an unknown time zone."""
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, OSError, KeyError):
        raise Problem(
            422,
            f"timezone: {shown(timezone)} is not a time zone (e.g. Europe/Amsterdam)",
            title="Invalid request",
            type_="urn:ere-proxy:problem:invalid-field",
            errors=[{"field": "timezone", "detail": "is not a time zone"}],
        ) from None
    return ImportOptions(partner_id, file_name, zone, chargers, charger, fold)
