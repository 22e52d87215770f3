"""`ere-proxy links`: link periods that keep a charger's past, and the changes they refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.ere.core.quarters import Quarter
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from testkit.ere_admin import EAN_2, IBAN_2, Admin, customer_args, partner_args, refused

NOW = datetime.now(UTC)
CLOSED = Quarter.containing(NOW).previous()  # the quarter the tests close
IN_CLOSED = CLOSED.start + timedelta(days=10)
AFTER_CLOSED = CLOSED.end  # the first instant a change may take effect


@pytest.fixture
async def run(settings: DatabaseSettings) -> Admin:
    """A partner with customers c-1 and c-2; charger CP-1 linked to c-1 since the closed quarter."""
    admin = Admin(settings)
    await admin.ok(*partner_args())
    await admin.ok(*customer_args())
    await admin.ok(*customer_args("c-2", ean_code=EAN_2, iban=IBAN_2))
    await admin.ok(
        "links", "add", "CP-1", "--customer", "c-1", "--max-power-w", "11000",
        "--from", IN_CLOSED.isoformat(), "--actor", "installer-desk",
    )  # fmt: skip
    return admin


def instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def close_quarter(settings: DatabaseSettings, quarter: Quarter = CLOSED) -> None:
    async with open_database(settings) as db:
        await db.execute(
            "INSERT INTO quarter_closes (quarter, state, shards, closed_at) VALUES ($1, 'closed', 1, now())",
            str(quarter),
        )


async def customer_at(settings: DatabaseSettings, identity: str, instant: datetime) -> str | None:
    """The customer a session ending at `instant` belongs to: the period containing it."""
    async with open_database(settings) as db:
        customer: str | None = await db.fetchval(
            "SELECT customer_id FROM charger_links WHERE identity = $1 AND valid_from <= $2 "
            "AND (valid_until IS NULL OR $2 < valid_until)",
            identity,
            instant,
        )
    return customer


async def test_moving_a_charger_keeps_its_past(run: Admin, settings: DatabaseSettings) -> None:
    await close_quarter(settings)
    moved_at = AFTER_CLOSED + timedelta(hours=1)
    out = await run.ok(
        "links", "move", "CP-1", "--to-customer", "c-2", "--at", moved_at.isoformat(),
        "--reason", "house sold", "--actor", "ops",
    )  # fmt: skip
    assert (
        out == f"moved charger CP-1 from customer c-1 to customer c-2 at {moved_at.isoformat()}\n"
    )
    assert await customer_at(settings, "CP-1", IN_CLOSED + timedelta(days=1)) == "c-1"
    assert await customer_at(settings, "CP-1", moved_at - timedelta(microseconds=1)) == "c-1"
    assert await customer_at(settings, "CP-1", moved_at) == "c-2"
    periods = await run.json("links", "list", "--all")
    assert [
        (p["customer_id"], p["max_power_w"], instant(p["valid_from"]), instant(p["valid_until"]))
        for p in periods
    ] == [("c-1", 11000, IN_CLOSED, moved_at), ("c-2", 11000, moved_at, None)]
    ended = periods[0]
    assert (ended["ended_by"], ended["end_reason"], ended["recorded_by"]) == (
        "ops",
        "house sold",
        "installer-desk",
    )
    assert periods[1]["recorded_by"] == "ops" and periods[1]["ended_at"] is None
    current = await run.json("links", "list")
    assert [(p["identity"], p["customer_id"]) for p in current] == [("CP-1", "c-2")]
    table = (await run.ok("links", "list", "--all")).splitlines()
    assert table[0].split()[:7] == ["IDENTITY", "CUSTOMER", "EAN", "MAX", "W", "VALID", "FROM"]
    assert "house sold" in table[1] and "open" in table[2]
    shown = await run.json("customers", "show", "c-1")
    assert [instant(link["valid_until"]) for link in shown["links"]] == [moved_at]


async def test_ending_a_link_keeps_the_row(run: Admin, settings: DatabaseSettings) -> None:
    out = await run.ok("links", "end", "CP-1", "--reason", "charger removed")
    assert out.startswith("ended link of charger CP-1 to customer c-1 at ")
    assert await run.json("links", "list") == []
    (period,) = await run.json("links", "list", "--all")
    assert period["end_reason"] == "charger removed" and period["valid_until"] is not None
    await refused(
        run, settings, ("links", "end", "CP-1", "--reason", "again"), "has no open link period"
    )
    # After the end the charger can be linked again, from then on.
    await run.ok("links", "add", "CP-1", "--customer", "c-2", "--max-power-w", "7400")
    assert len(await run.json("links", "list", "--all")) == 2


async def test_remove_is_end_and_needs_a_reason(run: Admin) -> None:
    with pytest.raises(SystemExit):
        await run("links", "remove", "CP-1")
    await run.ok("links", "remove", "CP-1", "--reason", "replaced")
    assert [p["end_reason"] for p in await run.json("links", "list", "--all")] == ["replaced"]


async def test_overlapping_periods_are_refused(run: Admin, settings: DatabaseSettings) -> None:
    await refused(
        run,
        settings,
        ("links", "add", "CP-1", "--customer", "c-2", "--max-power-w", "7400"),
        "identity: charger 'CP-1' is linked to customer 'c-1' from",
        "(open); use `links move` or `links end`",
    )
    end = NOW + timedelta(days=1)
    await run.ok("links", "end", "CP-1", "--reason", "leaving", "--at", end.isoformat())
    await refused(
        run,
        settings,
        ("links", "add", "CP-1", "--customer", "c-2", "--max-power-w", "7400", "--from",
         (end - timedelta(seconds=1)).isoformat()),
        f"until {end.isoformat()}",
    )  # fmt: skip
    await run.ok(
        "links", "add", "CP-1", "--customer", "c-2", "--max-power-w", "7400", "--from", end.isoformat()
    )  # fmt: skip


async def test_no_change_takes_effect_inside_a_closed_quarter(
    run: Admin, settings: DatabaseSettings
) -> None:
    await close_quarter(settings)
    inside = (CLOSED.end - timedelta(seconds=1)).isoformat()
    named = f"closed quarter {CLOSED}"
    await refused(run, settings, ("links", "end", "CP-1", "--reason", "x", "--at", inside), named)
    await refused(
        run,
        settings,
        ("links", "move", "CP-1", "--to-customer", "c-2", "--reason", "x", "--at", inside),
        "--at:",
        named,
    )
    await refused(
        run,
        settings,
        ("links", "add", "CP-2", "--customer", "c-2", "--max-power-w", "7400", "--from", inside),
        "--from:",
        named,
    )
    await run.ok("links", "end", "CP-1", "--reason", "x", "--at", AFTER_CLOSED.isoformat())


async def test_move_and_end_rules(run: Admin, settings: DatabaseSettings) -> None:
    before_start = (IN_CLOSED - timedelta(days=1)).isoformat()
    for argv, *expected in (
        (
            ("links", "end", "CP-1", "--reason", "x", "--at", before_start),
            "--at:",
            "is not after the start of the open period",
        ),
        (
            ("links", "move", "CP-1", "--to-customer", "c-1", "--reason", "x"),
            "nothing to move",
        ),
        (
            ("links", "move", "CP-1", "--to-customer", "nobody", "--reason", "x"),
            "--to-customer: no customer 'nobody'",
        ),
        (
            ("links", "move", "CP-9", "--to-customer", "c-2", "--reason", "x"),
            "charger 'CP-9' has no open link period",
        ),
    ):
        await refused(run, settings, argv, *expected)
    # Same customer, new power: a new period.
    await run.ok("links", "move", "CP-1", "--to-customer", "c-1", "--max-power-w", "22000",
                 "--reason", "new charger")  # fmt: skip
    assert [p["max_power_w"] for p in await run.json("links", "list", "--all")] == [11000, 22000]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--at", "yesterday", "--at: 'yesterday' is not an ISO 8601 timestamp"),
        ("--at", "2026-10-01T00:00:00", "has no UTC offset"),
        ("--at", "1999-12-31T23:00:00+00:00", "out of range; give a time in 2000-2100"),
        ("--at", "9999-12-31T23:59:59-12:00", "out of range"),
        ("--at", "2" * 10_000, "is not an ISO 8601 timestamp"),
        ("--at", "2026-10-01T00:00:00+01:00'; DELETE FROM charger_links;--", "not an ISO 8601"),
        ("--reason", "", "--reason: must not be empty"),
        ("--reason", "r" * 501, "too long; at most 500"),
        ("--reason", "moved\x1b[2J", "U+001B"),
        ("--reason", "moved\u202e", "U+202E"),
        ("--actor", "", "--actor: must not be empty"),
        ("--actor", "a" * 101, "too long; at most 100"),
        ("--actor", "ops\x00root", "U+0000"),
        ("--to-customer", "c 2", "--to-customer: 'c 2' is not a valid id"),
        ("--max-power-w", "-1", "--max-power-w:"),
        ("--max-power-w", "1e400", "--max-power-w:"),
    ],
)
async def test_hostile_link_changes(
    run: Admin, settings: DatabaseSettings, option: str, value: str, expected: str
) -> None:
    defaults = {"--to-customer": "c-2", "--reason": "moved", "--at": NOW.isoformat()}
    move = ["links", "move", "CP-1"]
    for name, default in (defaults | {option: value}).items():
        move += [name, default]
    err = await refused(run, settings, tuple(move), expected)
    assert "\x00" not in err and "\x1b" not in err
    if option in ("--at", "--reason", "--actor"):
        end = ["links", "end", "CP-1", "--reason", "x", option, value]
        await refused(run, settings, tuple(end), expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tomorrow", "--from: 'tomorrow' is not an ISO 8601 timestamp"),
        ("2026-10-01", "is not an ISO 8601 timestamp"),
        ("2026-10-01T00:00:00", "has no UTC offset"),
        ("0001-01-01T00:00:00+00:00", "out of range"),
        ("\x00" * 100, "is not an ISO 8601 timestamp"),
    ],
)
async def test_hostile_link_start(
    run: Admin, settings: DatabaseSettings, value: str, expected: str
) -> None:
    argv = ("links", "add", "CP-2", "--customer", "c-2", "--max-power-w", "7400", "--from", value)
    await refused(run, settings, argv, expected)


async def test_no_change_while_a_quarter_is_closing(run: Admin, settings: DatabaseSettings) -> None:
    """A close reads links shard by shard: a move between two shards' reads would count a
    session for both customers (or neither), so link changes wait until the close is done."""
    async with open_database(settings) as db:
        await db.execute(
            "INSERT INTO quarter_closes (quarter, state, shards) VALUES ($1, 'closing', 2)",
            str(CLOSED),
        )
    later = (AFTER_CLOSED + timedelta(hours=1)).isoformat()
    closing = f"{CLOSED} is closing"
    await refused(
        run,
        settings,
        ("links", "move", "CP-1", "--to-customer", "c-2", "--reason", "x", "--at", later),
        closing,
    )
    await refused(
        run,
        settings,
        ("links", "add", "CP-2", "--customer", "c-2", "--max-power-w", "7400", "--from", later),
        closing,
    )
    async with open_database(settings) as db:
        await db.execute("UPDATE quarter_closes SET state = 'closed', closed_at = now()")
    await run.ok("links", "end", "CP-1", "--reason", "x", "--at", later)
