"""The database handle: queries, bulk inserts, transactions, the DSN path, connection errors."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec
import pytest
import trio

from proxy.runtime.config import DatabaseSettings
from proxy.store import DatabaseUnavailable, open_database
from proxy.store.db import EMBEDDED_DATABASE, redact_dsn
from proxy.store.errors import EmbeddedPostgresError
from proxy.store.migrate import load_migrations
from testkit.ports import free_port
from testkit.postgres import FAST_SETTINGS

ROWS = [
    (1, "CP-1", Decimal("42.370"), datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)),
    (
        2,
        "CP-2 ünïcode",
        Decimal("0.001"),
        datetime.datetime(2026, 3, 1, 12, 5, tzinfo=datetime.UTC),
    ),
    (3, "CP-3", None, None),
]
TABLE = "CREATE TABLE readings (id int PRIMARY KEY, charger text NOT NULL, kwh numeric(12,3), at timestamptz)"


async def test_executemany_and_fetch_round_trip(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        await db.execute(TABLE)
        await db.executemany("INSERT INTO readings VALUES ($1, $2, $3, $4)", ROWS)
        rows = await db.fetch("SELECT * FROM readings ORDER BY id")
        assert [tuple(row) for row in rows] == ROWS
        assert (await db.fetchrow("SELECT charger FROM readings WHERE id = $1", 2))[
            "charger"
        ] == "CP-2 ünïcode"
        assert await db.fetchval("SELECT count(*) FROM readings") == 3


async def test_copy_records_to_table_round_trip(settings: DatabaseSettings) -> None:
    many = [(i, f"CP-{i}", Decimal(i) / 1000, None) for i in range(5000)]
    async with open_database(settings) as db:
        await db.execute(TABLE)
        assert await db.copy_records_to_table("readings", records=many) == "COPY 5000"
        await db.copy_records_to_table(
            "readings", records=[(9999, "CP-x")], columns=["id", "charger"]
        )
        assert await db.fetchval("SELECT sum(kwh) FROM readings") == sum(row[2] for row in many)
        assert await db.fetchval("SELECT count(*) FROM readings") == 5001


async def test_transaction_commits_or_rolls_back(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        await db.execute(TABLE)
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO readings (id, charger) VALUES (1, 'kept')")
        with pytest.raises(ZeroDivisionError):  # raised in the block, not wrapped in a group
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO readings (id, charger) VALUES (2, 'gone')")
                1 / 0
        with trio.move_on_after(0.2):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO readings (id, charger) VALUES (3, 'gone')")
                await tx.execute("SELECT pg_sleep(10)")  # cancelled on the server
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO readings (id, charger) VALUES (4, 'kept')")
            with pytest.raises(asyncpg.UniqueViolationError):
                async with tx.transaction():  # a savepoint
                    await tx.execute("INSERT INTO readings (id, charger) VALUES (4, 'duplicate')")
        assert [row["id"] for row in await db.fetch("SELECT id FROM readings ORDER BY id")] == [
            1,
            4,
        ]


async def test_a_transaction_cancelled_at_its_begin_or_commit_leaves_nothing_and_no_open_transaction(
    settings: DatabaseSettings,
) -> None:
    """Cancelled while BEGIN or COMMIT is under way (a shutdown, a timeout): the block's writes are
    not kept, and no connection goes back to the pool inside a transaction (which asyncpg reports
    as an error that would end the whole database context)."""
    async with open_database(settings) as db:
        await db.execute(TABLE)
        for n in range(20):
            with trio.CancelScope() as scope:
                async with db.transaction() as tx:
                    await tx.execute(f"INSERT INTO readings (id, charger) VALUES ({n}, 'gone')")
                    scope.cancel()  # lands at the COMMIT
            with trio.move_on_after(0.0005 * n):  # lands somewhere in BEGIN, the insert or COMMIT
                async with db.transaction() as tx:
                    await tx.execute(
                        f"INSERT INTO readings (id, charger) VALUES ({100 + n}, 'maybe')"
                    )
        ids = [row["id"] for row in await db.fetch("SELECT id FROM readings ORDER BY id")]
        assert all(i >= 100 for i in ids)
        assert (
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
            )
            == 0
        )


async def test_a_lean_pool_still_resets_what_a_session_left_and_ends_open_transactions(
    settings: DatabaseSettings,
) -> None:
    """With `lean_release` (one connection, so every borrower gets the same session) a single
    call and a transaction block go back without the reset query; a `connection()` block's
    session state (a setting, a session-level advisory lock) is still reset, and a transaction
    left open is rolled back."""
    async with open_database(
        msgspec.structs.replace(settings, pool_size=1), lean_release=True
    ) as db:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        await db.execute("SET application_name = 'not reset'")  # what lean callers never do
        assert await db.fetchval("SHOW application_name") == "not reset"
        async with db.transaction() as tx:
            await tx.execute("SET LOCAL application_name = 'in a transaction'")
        assert await db.fetchval("SHOW application_name") == "not reset"
        async with db.connection() as conn:
            await conn.execute("SET application_name = 'left by a session'")
            await conn.execute("SELECT pg_advisory_lock(4242)")
        assert await db.fetchval("SELECT pg_backend_pid()") == backend  # the same session
        assert await db.fetchval("SHOW application_name") != "left by a session"
        held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
        assert await db.fetchval(held) == 0
        with pytest.raises(asyncpg.PostgresError):
            async with db.transaction() as tx:
                await tx.execute("SELECT 1/0")
        assert await db.fetchval("SELECT 1") == 1  # no transaction left open or aborted


async def test_a_second_database_on_the_same_dsn_sees_the_data(settings: DatabaseSettings) -> None:
    async with open_database(settings) as first:
        await first.execute("CREATE TABLE shared (v text)")
        async with open_database(DatabaseSettings(dsn=first.dsn, pool_size=1)) as second:
            assert second.applied_migrations == []
            await second.execute("INSERT INTO shared VALUES ('from second')")
        assert await first.fetchval("SELECT v FROM shared") == "from second"


async def test_queries_run_concurrently_from_many_trio_tasks(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await db.fetchval("SELECT $1::int FROM pg_sleep(0.05)", i))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
        assert sorted(results) == list(range(20))


async def test_an_unreachable_dsn_fails_clearly_within_the_timeout() -> None:
    dsn = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/ere"
    start = trio.current_time()
    with pytest.raises(DatabaseUnavailable, match="within 0.5 s") as caught:
        async with open_database(DatabaseSettings(dsn=dsn, connect_timeout=0.5)):
            pass
    assert trio.current_time() - start < 3
    assert "s3cret" not in str(caught.value) and "app:***@127.0.0.1" in str(caught.value)


async def test_a_missing_database_fails_at_once(database_dsn: str) -> None:
    missing = database_dsn.replace("/test_", "/absent_")
    start = trio.current_time()
    with pytest.raises(DatabaseUnavailable, match="InvalidCatalogNameError"):
        async with open_database(DatabaseSettings(dsn=missing, connect_timeout=10)):
            pass
    assert trio.current_time() - start < 3


async def test_without_a_dsn_an_embedded_server_runs_in_the_data_dir(server_dir: Path) -> None:
    settings = DatabaseSettings(data_dir=str(server_dir / "data"))
    async with open_database(settings, server_settings=FAST_SETTINGS) as db:
        assert await db.fetchval("SELECT current_database()") == EMBEDDED_DATABASE
        assert [m.version for m in db.applied_migrations] == [m.version for m in load_migrations()]
        await db.execute("CREATE TABLE survives (v int); INSERT INTO survives VALUES (7)")
    assert not (server_dir / "data" / "postgres" / "postmaster.pid").exists()  # stopped on exit
    async with open_database(settings, server_settings=FAST_SETTINGS) as db:
        assert db.applied_migrations == []
        assert await db.fetchval("SELECT v FROM survives") == 7


async def test_embedded_settings_reach_the_server_and_tests_settings_win(server_dir: Path) -> None:
    settings = DatabaseSettings(
        data_dir=str(server_dir / "data"),
        embedded_settings={"work_mem": "7MB", "max_connections": 42, "fsync": True},
    )
    async with open_database(settings, server_settings=FAST_SETTINGS) as db:
        assert await db.fetchval("SHOW work_mem") == "7MB"
        assert await db.fetchval("SHOW max_connections") == "42"
        assert await db.fetchval("SHOW fsync") == FAST_SETTINGS["fsync"]


async def test_an_embedded_setting_value_is_one_value_however_it_is_quoted(
    server_dir: Path,
) -> None:
    # pg_ctl hands the options to a shell: a value must not smuggle in options of its own.
    value = "x' -c port=1 -c listen_addresses='*' \"$(touch pwned)\""
    settings = DatabaseSettings(
        data_dir=str(server_dir / "data"), embedded_settings={"cluster_name": value}
    )
    async with open_database(settings, server_settings=FAST_SETTINGS) as db:
        assert await db.fetchval("SHOW cluster_name") == value
        assert await db.fetchval("SHOW listen_addresses") == ""
    assert not any(server_dir.rglob("pwned")) and not Path("pwned").exists()


async def test_an_embedded_setting_the_server_refuses_fails_the_start_with_its_words(
    server_dir: Path,
) -> None:
    settings = DatabaseSettings(
        data_dir=str(server_dir / "data"), embedded_settings={"shared_buffers": "lots"}
    )
    with pytest.raises(EmbeddedPostgresError, match='invalid value for parameter "shared_buffers"'):
        async with open_database(settings, server_settings=FAST_SETTINGS):
            pass
    assert not (server_dir / "data" / "postgres" / "postmaster.pid").exists()


def test_redact_dsn() -> None:
    redacted = redact_dsn("postgresql://u:p%40ss@db:5432/x?sslmode=require")
    assert redacted == "postgresql://u:***@db:5432/x?sslmode=require"
    assert redact_dsn("postgresql://u@db/x") == "postgresql://u@db/x"
