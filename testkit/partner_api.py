"""The partner API on a real hypercorn server over a test database, and a plain HTTP client.

`serving_api` opens the database as the api role does (`open_api_database`), starts the API (with `context`, default a bare one) on a
free port of 127.0.0.1 and yields (database, port); `call` sends one HTTP/1.1 request (h11, a
fresh connection) and returns the reply; `idem` is a fresh Idempotency-Key header and
`problem_of` checks a problem+json answer; `partner_with_key` adds a partner and a key;
`enrolment` is a valid enrolment body. `seed_session` records a charger's session as its OCPP
traffic would (the API makes none).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import h11
import trio

from proxy.api.context import ApiContext
from proxy.api.key_store import create_key
from proxy.api.role import open_api_database, serve_api
from proxy.ere.admin.new_records import NewPartner
from proxy.ere.admin.records import add_partner
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.runtime.config import ApiSettings, DatabaseSettings
from proxy.store.db import Database
from testkit.ports import free_port

IBAN_PARTNER = "NL91ABNA0417164300"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@asynccontextmanager
async def serving_api(
    settings: DatabaseSettings, *, context: ApiContext | None = None, **api: Any
) -> AsyncIterator[tuple[Database, int]]:
    port = free_port()
    async with open_api_database(settings) as db, trio.open_nursery() as nursery:
        stop = trio.Event()
        serve = functools.partial(serve_api, context=context)
        await nursery.start(serve, db, ApiSettings(port=port, enabled=True, **api), stop)
        try:
            yield db, port
        finally:
            stop.set()


async def call(
    port: int,
    method: str,
    path: str,
    *,
    key: str | None = None,
    json_body: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection; `json_body` is sent as JSON, `body` as given."""
    sent = {"host": "127.0.0.1", "connection": "close"}
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent["content-type"] = "application/json"
    if body is not None:
        sent["content-length"] = str(len(body))
    sent.update(headers or {})
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        data = conn.send(h11.Request(method=method, target=path, headers=list(sent.items())))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # the server answered (413) and closed before reading it all
        status, reply_headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                reply_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    return Reply(status, reply_headers, b"".join(chunks))


PROBLEM = "application/problem+json"


def idem() -> dict[str, str]:
    """A fresh `Idempotency-Key` header."""
    return {"idempotency-key": str(uuid.uuid4())}


def problem_of(reply: Reply, *statuses: int) -> dict[str, Any]:
    """The problem details of `reply`, which must have one of `statuses` (RFC 9457 fields)."""
    assert reply.status in statuses, (reply.status, reply.body)
    assert reply.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = reply.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    return problem


async def partner_with_key(
    db: Database, partner_id: str, scopes: tuple[str, ...], *, payout_model: str = "partner-account"
) -> str:
    """Add a partner (`partner-account`: paid to the partner's IBAN) and return a new key."""
    iban = IBAN_PARTNER if payout_model == "partner-account" else None
    name = f"Partner {partner_id}"
    partner = NewPartner(
        partner_id,
        name,
        "installer",
        payout_model,
        iban,
        name if iban else None,
        PartnerBranding(name),
    )
    await add_partner(db, partner)
    return (await create_key(db, partner_id, scopes)).key


async def seed_session(
    db: Database,
    identity: str,
    transaction: str,
    *,
    started_at: datetime,
    stopped_at: datetime | None = None,
    kwh: str = "0",
    session_id: int | None = None,
) -> int:
    """A session of `identity` (active without `stopped_at`, else completed with `kwh`), with
    `session_id` if given; returns its id."""
    start_wh = 1_000_000
    stop_wh = None if stopped_at is None else start_wh + int(Decimal(kwh) * 1000)
    status = "active" if stopped_at is None else "completed"
    return int(
        await db.fetchval(
            "INSERT INTO sessions (session_id, identity, transaction_id, connector_id, started_at, "
            "stopped_at, meter_start_wh, meter_stop_wh, status, meter_class) "
            "OVERRIDING SYSTEM VALUE VALUES (coalesce($1, nextval(pg_get_serial_sequence("
            "'sessions', 'session_id'))), $2, $3, 1, $4, $5, $6, $7, $8, 'declared') "
            "RETURNING session_id",
            session_id,
            identity,
            transaction,
            started_at,
            stopped_at,
            start_wh,
            stop_wh,
            status,
        )
    )


def enrolment(ean: str, **fields: Any) -> dict[str, Any]:
    """A valid enrolment body for `ean`, consent given an hour ago; `fields` replace any."""
    accepted = (datetime.now(DUTCH_TIME) - timedelta(hours=1)).isoformat(timespec="seconds")
    body: dict[str, Any] = {
        "name": "J. Jansen",
        "email": "j.jansen@example.nl",
        "address": "Dorpsstraat 1",
        "postcode": "1234 AB",
        "city": "Utrecht",
        "ean": ean,
        "grid_operator": "Stedin",
        "consent": {"text_version": "v3", "accepted_at": accepted, "user_reference": "user-42"},
    }
    return body | fields
