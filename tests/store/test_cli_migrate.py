"""`ere-proxy migrate` as a process: against a DSN, and two at once on one embedded data dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from proxy.store.migrate import load_migrations


def write_config(path: Path, **database: str) -> Path:
    lines = ["[database]", *(f'{key} = "{value}"' for key, value in database.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


async def migrate(config: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "proxy", "migrate", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_migrate_against_a_dsn_prints_what_it_applied(
    database_dsn: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "proxy.toml", dsn=database_dsn)
    first = await migrate(config)
    assert first.returncode == 0, first.stderr
    latest = load_migrations()[-1].version
    assert first.stdout.decode().splitlines() == [
        *(f"applied {m.label}" for m in load_migrations()),
        f"schema is at version {latest}",
    ]
    second = await migrate(config)
    assert second.stdout.decode().splitlines() == [f"schema is up to date (version {latest})"]


async def test_two_migrate_processes_share_one_embedded_server(
    server_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "proxy.toml", data_dir=str(server_dir / "data"))
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run() -> None:
        results.append(await migrate(config))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(run)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    outputs = "".join(r.stdout.decode() for r in results)
    assert outputs.count("applied 001_schema_migrations") == 1
    assert not (server_dir / "data" / "postgres" / "postmaster.pid").exists()


async def test_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[database]\ndsn = "postgresql://u:pw@127.0.0.1:1/x"\nconnect_timeout = 0.3\n'
    )
    result = await migrate(config)
    assert result.returncode == 1
    assert "cannot connect to postgresql://u:***@127.0.0.1:1/x" in result.stderr.decode()


async def test_processes_starting_a_fresh_embedded_server_together_log_no_error(
    server_dir: Path, tmp_path: Path
) -> None:
    """The first start of `run` (its proxy and ERE workers at once) creates the database once,
    with nothing alarming in the server's log."""
    data_dir = server_dir / "data"
    config = write_config(tmp_path / "proxy.toml", data_dir=str(data_dir))
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run() -> None:
        results.append(await migrate(config))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(run)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert [r.stderr for r in results] == [b""] * 4
    server_log = (data_dir / "postgres.log").read_text()
    assert "ERROR" not in server_log and "already exists" not in server_log, server_log
