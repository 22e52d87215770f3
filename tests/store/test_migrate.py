"""Migrations: applied once, in order, each atomically; newer or edited schemas refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from proxy.runtime.config import DatabaseSettings
from proxy.store import Database, MigrationError, open_database
from proxy.store.migrate import apply_migrations, load_migrations

PACKAGED = load_migrations()


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    """A migrations directory holding `files` (name -> SQL)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def with_packaged(tmp_path: Path, files: dict[str, str]) -> Path:
    """A migrations directory holding the runner's own table (packaged migration 001) plus `files`."""
    runner = PACKAGED[0]
    return write_migrations(tmp_path / "migrations", {f"{runner.label}.sql": runner.sql, **files})


async def versions(db: Database) -> list[int]:
    return [
        row["version"]
        for row in await db.fetch("SELECT version FROM schema_migrations ORDER BY version")
    ]


def test_packaged_migrations_are_numbered_and_start_with_the_runners_table() -> None:
    assert PACKAGED[0].label == "001_schema_migrations"
    assert [m.version for m in PACKAGED] == sorted({m.version for m in PACKAGED})


async def test_opening_applies_migrations_once(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        assert [m.label for m in db.applied_migrations] == [m.label for m in PACKAGED]
        assert await versions(db) == [m.version for m in PACKAGED]
    async with open_database(settings) as db:
        assert db.applied_migrations == []
        assert await versions(db) == [m.version for m in PACKAGED]


async def test_only_new_migrations_are_applied_in_order(
    settings: DatabaseSettings, tmp_path: Path
) -> None:
    directory = with_packaged(tmp_path, {"002_things.sql": "CREATE TABLE things (id int);"})
    async with open_database(settings, migrations=load_migrations(directory)) as db:
        assert [m.version for m in db.applied_migrations] == [1, 2]
    write_migrations(
        directory, {"010_more.sql": "ALTER TABLE things ADD note text;", "003_x.sql": "SELECT 1;"}
    )
    async with open_database(settings, migrations=load_migrations(directory)) as db:
        assert [m.version for m in db.applied_migrations] == [3, 10]
        assert await versions(db) == [1, 2, 3, 10]
        await db.execute("INSERT INTO things VALUES (1, 'n')")


async def test_a_failing_migration_is_rolled_back_and_named(
    settings: DatabaseSettings, tmp_path: Path
) -> None:
    directory = with_packaged(
        tmp_path,
        {
            "002_ok.sql": "CREATE TABLE ok (id int);",
            "003_broken.sql": "CREATE TABLE half (id int);\nSELECT no_such_column FROM ok;",
        },
    )
    with pytest.raises(MigrationError, match="003_broken failed: UndefinedColumnError"):
        async with open_database(settings, migrations=load_migrations(directory)):
            pass
    async with open_database(settings, migrate=False) as db:
        assert await versions(db) == [1, 2]
        assert await db.fetchval("SELECT to_regclass('half')") is None


async def test_a_database_from_a_newer_version_is_refused(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        await db.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', '')"
        )
    with pytest.raises(
        MigrationError, match="migration\\(s\\) 999 that this version does not know"
    ):
        async with open_database(settings):
            pass


async def test_an_edited_applied_migration_is_refused(
    settings: DatabaseSettings, tmp_path: Path
) -> None:
    directory = with_packaged(tmp_path, {"002_t.sql": "CREATE TABLE t (id int);"})
    async with open_database(settings, migrations=load_migrations(directory)):
        pass
    write_migrations(directory, {"002_t.sql": "CREATE TABLE t (id bigint);"})
    with pytest.raises(MigrationError, match="002_t changed after it was applied"):
        async with open_database(settings, migrations=load_migrations(directory)):
            pass


async def test_concurrent_migrators_apply_each_migration_once(
    settings: DatabaseSettings, tmp_path: Path
) -> None:
    # The sleep keeps the first migrator inside its migration while the others arrive.
    directory = with_packaged(
        tmp_path, {"002_slow.sql": "SELECT pg_sleep(0.3); CREATE TABLE slow (id int);"}
    )
    migrations = load_migrations(directory)
    results: list[list[int]] = []

    async def migrator() -> None:
        async with open_database(settings, migrate=False) as db, db.connection() as conn:
            results.append([m.version for m in await apply_migrations(conn, migrations)])

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(migrator)
    assert sorted(results) == [[], [], [1, 2]]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"1-bad.sql": ""}, "not named NNN_name.sql"),
        ({"001_a.sql": "", "1_b.sql": ""}, "two migrations have version 1"),
    ],
)
def test_badly_named_migration_files_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(MigrationError, match=message):
        load_migrations(write_migrations(tmp_path / "m", files))


def test_files_other_than_sql_are_ignored(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "m", {"README.md": "notes", "002_b.sql": "", "001_a.sql": ""}
    )
    assert [m.label for m in load_migrations(directory)] == ["001_a", "002_b"]
