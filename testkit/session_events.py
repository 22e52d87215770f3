"""One charger's session as capture events: a boot, a transaction started offline under a
provisional id, and its rename once the back-office gives the real one; and the session ids the
database then holds (the rename is stored only if the start was stored before it).
"""

from __future__ import annotations

from decimal import Decimal

from proxy.capture.events import ChargerBooted, Event, TransactionIdAssigned, TransactionStarted
from proxy.store.db import Database

PROVISIONAL, REAL = "2000000001", "17"


def event_id(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def boot() -> Event:
    return ChargerBooted(
        event_id(1), "CP-1", 1.0, "Vendor", "Model", None, None, None, None, None, None, "Accepted"
    )


def start() -> Event:
    return TransactionStarted(
        event_id(2),
        "CP-1",
        2.0,
        1,
        "TAG",
        Decimal(100),
        "2026-01-01T10:00:00Z",
        None,
        PROVISIONAL,
        "Accepted",
    )


def rename() -> Event:
    return TransactionIdAssigned(event_id(3), "CP-1", 3.0, PROVISIONAL, REAL)


async def session_ids(db: Database) -> list[str]:
    return [row["transaction_id"] for row in await db.fetch("SELECT transaction_id FROM sessions")]
