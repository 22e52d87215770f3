"""Request and response bodies of `POST /v1/sessions/batch` and `/v1/sessions/imports` (pydantic,
at the edge only).

A batch is read in two steps, so every error names its item as `sessions[i].field`: the
envelope (`SessionBatchIn`: an object with 1 to `MAX_BATCH` items) by FastAPI, then each item
against `SessionPushIn` by `proxy.api.session_push_data`, strict and bounded; the domain's
rules (`proxy.ingest.records`) come after. kWh are decimal strings (or JSON numbers) in
requests and decimal strings in answers.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from proxy.ingest.records import MAX_SIGNED_DATA_CHARS, MAX_TEXT_CHARS

__all__ = [
    "MAX_BATCH",
    "BatchItemOut",
    "ImportOut",
    "SessionBatchIn",
    "SessionBatchOut",
    "SessionPushIn",
]

MAX_BATCH = 1000
_KWH = Annotated[
    Decimal,
    Field(max_digits=24, decimal_places=9, examples=["12.345"]),
]


class SessionPushIn(BaseModel):
    """One session of one of your chargers, as your platform recorded it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="your id of the session: the same id again is the same session (sending "
        "it again changes nothing; with other content it is refused)",
    )
    charger: str = Field(
        min_length=1,
        max_length=48,
        description="the OCPP identity of one of your chargers (registered, granted or linked)",
    )
    transaction_id: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    started_at: datetime = Field(description="ISO 8601 with an offset")
    stopped_at: datetime = Field(description="ISO 8601 with an offset")
    energy_kwh: _KWH = Field(description="energy charged, kWh")
    meter_start_kwh: _KWH | None = Field(default=None, description="meter register at start")
    meter_stop_kwh: _KWH | None = Field(
        default=None, description="meter register at stop (stop − start must be the energy)"
    )
    signed_data: str | None = Field(
        default=None,
        max_length=MAX_SIGNED_DATA_CHARS,
        description="signed meter data (OCMF, as the charger sent it): verified against the "
        "charger's meter key",
    )


class SessionBatchIn(BaseModel):
    """Up to 1,000 sessions, stored all or none."""

    sessions: Annotated[
        list[Any],
        Field(min_length=1, max_length=MAX_BATCH),
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": SessionPushIn.model_json_schema(),
            }
        ),
    ]


Outcome = Literal["inserted", "duplicate", "unchanged"]


class BatchItemOut(BaseModel):
    index: int = Field(description="the item's place in the request, from 0")
    id: str = Field(description="your id of the session")
    outcome: Outcome = Field(
        description="inserted: a new session; duplicate: a new session, kept as evidence but "
        "not counted: the same charging event is recorded from another source "
        "(`duplicate_of`); unchanged: sent before with the same content"
    )
    session_id: int = Field(description="the session (`GET /v1/sessions/{id}` once linked)")
    duplicate_of: int | None = Field(description="the session that counts for this event")


class SessionBatchOut(BaseModel):
    inserted: int
    duplicates: int
    unchanged: int
    results: list[BatchItemOut]


class ImportOut(BaseModel):
    """The outcome of a CSV import, all rows stored."""

    rows: int = Field(description="rows read (the header and blank rows not counted)")
    inserted: int
    duplicates: int = Field(description="rows stored as evidence, the event counting elsewhere")
    unchanged: int = Field(description="rows imported before with the same content")
