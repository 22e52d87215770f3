"""Realistic partner books at scale, seeded fast: what `python -m bench api` serves.

`seed(db, sessions)` fills a freshly migrated database with `PARTNERS` partners, one customer
per `SESSIONS_PER_CUSTOMER` sessions (each with an EAN, a 2026 mandate and a charger; every
tenth customer a second charger), the chargers in the registry (registered through the API by
their partner) and linked to their customer from December 2025; every twentieth charger moves
on 1 July 2026 (Dutch time) to the next customer, who belongs to another partner, so a link
period decides whose session is whose. Then `sessions` sessions spread evenly over 2026 up to
1 December, on random chargers, their ids in start order as capture assigns them, all completed
except the latest session of every fiftieth charger (still charging). Q1 and Q2 are closed:
every session that ended in them is assessed (eligible, or ineligible for its meter class) and
the eligible ones are stated on their customer's statement line of the quarter. Q3 and Q4 are
open and not assessed. Each partner gets `keys_per_partner` API keys (read scopes; a client
of the load has a key of its own, as an integration would, so the per-key rate limit of one
key is never what the load measures).

Bulk rows go in with COPY (`copy_records_to_table`); rows derived from them (assessments,
closes, statement lines) with set-based INSERT ... SELECT. No trigger is bypassed: the
triggers of these tables guard updates and deletes, and the insert triggers (mandates,
customers) run as they would for any writer. The database is vacuumed and analysed at the end,
as a long-lived database is.

Errors: the database's, unchanged (it must be empty and migrated; give it a statement deadline
of minutes: the COPY of a million sessions is one statement). The rows go in in one
transaction, so a failure or cancellation leaves the database empty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from proxy.api.key_store import create_key
from proxy.ere.core.ean import check_digit
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.store.connection import Connection

PARTNERS = 5
SESSIONS_PER_CUSTOMER = 200
SCOPES = ("customers:read", "chargers:read", "sessions:read")

YEAR_START = datetime(2026, 1, 1, tzinfo=DUTCH_TIME)
SESSIONS_END = datetime(2026, 12, 1, tzinfo=DUTCH_TIME)
LINKED_FROM = datetime(2025, 12, 1, tzinfo=DUTCH_TIME)
MOVED_AT = datetime(2026, 7, 1, tzinfo=DUTCH_TIME)
# (quarter, first instant, end) of the closed quarters, Dutch time.
CLOSED = (
    ("2026Q1", YEAR_START, datetime(2026, 4, 1, tzinfo=DUTCH_TIME)),
    ("2026Q2", datetime(2026, 4, 1, tzinfo=DUTCH_TIME), MOVED_AT),
)
# Meter classes by charger index modulo 20 (about 85 % signed-verified).
_METER_CLASSES = ["signed-verified"] * 17 + ["declared", "signed-unverified", "unknown"]


@dataclass
class Books:
    """What the load needs to know of the seeded books, and how many rows each table got."""

    keys: dict[str, list[str]] = field(default_factory=dict)  # partner → bearer keys
    customers: dict[str, list[str]] = field(default_factory=dict)  # partner → customer ids
    chargers: dict[str, list[str]] = field(default_factory=dict)  # partner → linked now
    rows: dict[str, int] = field(default_factory=dict)


def _partner(customer: int) -> str:
    return f"P{customer % PARTNERS + 1}"


def _ean(customer: int) -> str:
    body = f"871687{customer:011d}"
    return body + str(check_digit(body))


def _customer_rows(customers: int) -> list[tuple[Any, ...]]:
    created = datetime(2025, 6, 1, tzinfo=UTC)
    return [
        (
            f"C{c:06d}",
            _partner(c),
            f"Customer {c}",
            f"Dorpsstraat {c % 300 + 1}",
            f"{1000 + c % 9000} AB",
            "Utrecht",
            _ean(c),
            "Stedin",
            "NL91ABNA0417164300",
            f"customer{c}@example.nl",
            created + timedelta(minutes=c),
        )
        for c in range(customers)
    ]


def _chargers(customers: int) -> list[tuple[str, int]]:
    """(identity, first customer) of every charger: one per customer, two for every tenth."""
    owners = [c for c in range(customers) for _ in range(2 if c // PARTNERS % 10 == 9 else 1)]
    return [(f"CP-{i:06d}", owner) for i, owner in enumerate(owners)]


def _link_rows(chargers: list[tuple[str, int]], customers: int) -> list[tuple[Any, ...]]:
    """Each charger's link periods: from December 2025 on; every twentieth charger moves."""
    rows: list[tuple[Any, ...]] = []
    for index, (identity, owner) in enumerate(chargers):
        first = f"C{owner:06d}"
        if index % 20 == 19:  # moved on 1 July to the next customer, another partner's
            moved = ("bench", "moved")
            rows.append((identity, first, 11000, LINKED_FROM, MOVED_AT, MOVED_AT, *moved))
            nxt = f"C{(owner + 1) % customers:06d}"
            rows.append((identity, nxt, 11000, MOVED_AT, None, None, None, None))
        else:
            rows.append((identity, first, 11000, LINKED_FROM, None, None, None, None))
    return rows


def _session_rows(chargers: list[tuple[str, int]], count: int, rng: random.Random) -> list[tuple]:
    """`count` sessions in start order; every fiftieth charger's latest one still active."""
    span = (SESSIONS_END - YEAR_START).total_seconds()
    meters = [1_000_000] * len(chargers)
    rows: list[list[Any]] = []
    latest: dict[int, int] = {}
    for n in range(count):
        charger = rng.randrange(len(chargers))
        identity = chargers[charger][0]
        started = YEAR_START + timedelta(seconds=(n + rng.random()) * span / count)
        stopped = started + timedelta(minutes=rng.randrange(45, 600))
        wh = rng.randrange(2_000, 40_000)
        start_wh, stop_wh = meters[charger], meters[charger] + wh
        meters[charger] = stop_wh + rng.randrange(0, 50)
        meter_class = _METER_CLASSES[charger % 20]
        signed = meter_class.startswith("signed")
        rows.append(
            [
                identity,
                str(100_000 + n),
                1 + (n % 7 == 0),
                f"TAG{charger:06d}",
                started,
                stopped,
                start_wh,
                stop_wh,
                started + timedelta(minutes=1),
                stopped - timedelta(minutes=1),
                stop_wh - 20,
                "completed",
                "EVDisconnected" if n % 3 else "Local",
                meter_class,
                start_wh if signed else None,
                stop_wh if signed else None,
                stopped,
                started,
                stopped,
            ]
        )
        latest[charger] = n
    for charger, n in latest.items():
        if charger % 50 == 0:  # still charging: no stop yet
            row = rows[n]
            row[5] = row[7] = row[15] = row[18] = None
            row[11], row[12], row[16] = "active", None, row[9]
    return [tuple(row) for row in rows]


_CUSTOMER_COLUMNS = [
    "customer_id",
    "partner_id",
    "name",
    "address",
    "postcode",
    "city",
    "ean",
    "grid_operator",
    "iban",
    "email",
    "created_at",
]
_LINK_COLUMNS = [
    "identity",
    "customer_id",
    "max_power_w",
    "valid_from",
    "valid_until",
    "ended_at",
    "ended_by",
    "end_reason",
]
_MANDATES = """
INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent, channel,
                      actor, consent_text_version)
SELECT ean, 2026, customer_id, '2025-12-01', '2026-01-01', '2026-12-31',
       '{"by": "customer", "method": "online-checkbox"}', 'api', 'bench', 'v3'
FROM customers"""
_SESSION_COLUMNS = [
    "identity",
    "transaction_id",
    "connector_id",
    "id_tag",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "first_reading_at",
    "last_reading_at",
    "last_reading_wh",
    "status",
    "stop_reason",
    "meter_class",
    "signed_start_wh",
    "signed_stop_wh",
    "updated_at",
    "start_received_at",
    "stop_received_at",
]

# The close of one quarter as a close leaves it: the close ($1 quarter, $2 its end), the
# assessments ($1, $2, $3 its start), its statement lines and their sessions ($1).
_CLOSE: list[tuple[str, int]] = [
    (
        """INSERT INTO quarter_closes (quarter, revision, state, shards, started_at, closed_at)
       VALUES ($1, 1, 'closed', 8, $2::timestamptz + interval '10 days',
               $2::timestamptz + interval '10 days 20 minutes')""",
        2,
    ),
    (
        """INSERT INTO session_assessments (session_id, quarter, revision, eligibility, reason, detail,
                                        kwh, customer_id, ean, assessed_at, inputs)
       SELECT s.session_id, $1, 1,
              CASE WHEN s.meter_class IN ('signed-verified', 'declared') THEN 'eligible' ELSE 'ineligible' END,
              CASE WHEN s.meter_class IN ('signed-verified', 'declared') THEN 'eligible' ELSE 'no-mid-evidence' END,
              'meter class ' || s.meter_class,
              CASE WHEN s.meter_class IN ('signed-verified', 'declared') THEN s.energy_wh / 1000 ELSE 0 END,
              l.customer_id, c.ean, $2::timestamptz + interval '10 days',
              jsonb_build_object('meter_class', s.meter_class, 'link_id', l.link_id)
       FROM sessions s
       JOIN charger_links l ON l.identity = s.identity AND l.valid_from <= s.stopped_at
            AND (l.valid_until IS NULL OR s.stopped_at < l.valid_until)
       JOIN customers c ON c.customer_id = l.customer_id
       WHERE s.status = 'completed' AND s.stopped_at >= $3 AND s.stopped_at < $2""",
        3,
    ),
    (
        """INSERT INTO statement_lines (quarter, revision, customer_id, ean, delivery_quarter, kind, kwh, ere,
                                    eur_per_ere, gross, fee_rate, fee, fee_vat, net, sessions)
       SELECT $1, 1, customer_id, ean, $1, 'regular', kwh, ere, 0.30, gross, 0.15,
              round(gross * 0.15, 2), round(round(gross * 0.15, 2) * 0.21, 2),
              gross - round(gross * 0.15, 2), n
       FROM (SELECT customer_id, ean, sum(kwh) AS kwh, round(sum(kwh) * 0.332694, 2) AS ere,
                    round(round(sum(kwh) * 0.332694, 2) * 0.30, 2) AS gross, count(*) AS n
             FROM session_assessments
             WHERE quarter = $1 AND revision = 1 AND eligibility = 'eligible'
             GROUP BY customer_id, ean) AS per_customer""",
        1,
    ),
    (
        """INSERT INTO statement_sessions (quarter, revision, customer_id, ean, delivery_quarter, kind,
                                       session_id, kwh)
       SELECT $1, 1, customer_id, ean, $1, 'regular', session_id, kwh
       FROM session_assessments
       WHERE quarter = $1 AND revision = 1 AND eligibility = 'eligible'""",
        1,
    ),
]

TABLES = (
    "partners",
    "customers",
    "mandates",
    "chargers",
    "charger_links",
    "sessions",
    "session_assessments",
    "statement_lines",
    "statement_sessions",
    "partner_api_keys",
)


async def seed(
    db: Connection, sessions: int, *, keys_per_partner: int = 2, random_seed: int = 2026
) -> Books:
    """Fill the empty, migrated database `db` (see the module docstring)."""
    rng = random.Random(random_seed)
    customers = max(PARTNERS, sessions // SESSIONS_PER_CUSTOMER)
    chargers = _chargers(customers)
    books = Books()
    async with db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (
                    f"P{p}",
                    f"Partner {p}",
                    ("cpo", "installer", "energy-supplier")[p % 3],
                    "partner-account" if p % 2 else "direct",
                    "NL91ABNA0417164300" if p % 2 else None,
                    f"Partner {p} BV" if p % 2 else None,
                )
                for p in range(1, PARTNERS + 1)
            ],
        )
        key_ids = {}
        for p in range(1, PARTNERS + 1):
            made = [await create_key(tx, f"P{p}", SCOPES) for _ in range(keys_per_partner)]
            books.keys[f"P{p}"] = [key.key for key in made]
            key_ids[f"P{p}"] = made[0].key_id
        await tx.copy_records_to_table(
            "customers", records=_customer_rows(customers), columns=_CUSTOMER_COLUMNS
        )
        await tx.execute(_MANDATES)
        await tx.copy_records_to_table(
            "chargers",
            records=[(identity, "ws://127.0.0.1:9/ocpp") for identity, _ in chargers],
            columns=["identity", "upstream"],
        )
        await tx.copy_records_to_table(
            "api_chargers",
            records=[
                (identity, _partner(owner), key_ids[_partner(owner)])
                for identity, owner in chargers
            ],
            columns=["identity", "partner_id", "key_id"],
        )
        await tx.copy_records_to_table(
            "charger_links", records=_link_rows(chargers, customers), columns=_LINK_COLUMNS
        )
        await tx.copy_records_to_table(
            "sessions", records=_session_rows(chargers, sessions, rng), columns=_SESSION_COLUMNS
        )
        for quarter, start, end in CLOSED:
            for statement, arity in _CLOSE:
                await tx.execute(statement, *(quarter, end, start)[:arity])
    await db.execute("VACUUM ANALYZE")
    for partner in books.keys:
        rows = await db.fetch(
            "SELECT customer_id FROM customers WHERE partner_id = $1 ORDER BY 1", partner
        )
        books.customers[partner] = [row[0] for row in rows]
        rows = await db.fetch(
            "SELECT l.identity FROM charger_links l JOIN customers c USING (customer_id) "
            "WHERE c.partner_id = $1 AND l.valid_until IS NULL ORDER BY 1",
            partner,
        )
        books.chargers[partner] = [row[0] for row in rows]
    books.rows = await count_rows(db)
    return books


async def count_rows(db: Connection) -> dict[str, int]:
    """Rows per table of the books."""
    return {t: int(await db.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
