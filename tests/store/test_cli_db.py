"""`ere-proxy db shell|migrate` as processes: psql on the configured DSN or the embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from proxy.store.migrate import load_migrations


def write_config(path: Path, **database: str) -> Path:
    lines = ["[database]", *(f'{key} = "{value}"' for key, value in database.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


async def ere_proxy(
    config: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    command, action, *rest = argv
    return await trio.run_process(
        [sys.executable, "-m", "proxy", command, action, "--config", str(config), *rest],
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


async def test_db_migrate_applies_and_reports_the_migrations(database_dsn: str, tmp_path: Path):
    config = write_config(tmp_path / "proxy.toml", dsn=database_dsn)
    first = await ere_proxy(config, "db", "migrate")
    assert first.returncode == 0, first.stderr
    labels = [f"applied {m.label}" for m in load_migrations()]
    assert first.stdout.decode().splitlines()[:-1] == labels
    again = await ere_proxy(config, "db", "migrate")
    latest = load_migrations()[-1].version
    assert again.stdout.decode() == f"schema is up to date (version {latest})\n"


async def test_db_shell_runs_psql_on_the_configured_dsn(database_dsn: str, tmp_path: Path):
    config = write_config(tmp_path / "proxy.toml", dsn=database_dsn)
    assert (await ere_proxy(config, "db", "migrate")).returncode == 0
    query = "SELECT current_database(), count(*) FROM sessions"
    result = await ere_proxy(config, "db", "shell", "-A", "-t", "-c", query)
    assert result.returncode == 0, result.stderr
    database = database_dsn.split("/")[-1].split("?")[0]
    assert result.stdout.decode() == f"{database}|0\n"
    # after --, every argument is psql's; psql's exit status is the command's
    failed = await ere_proxy(config, "db", "shell", "--", "-c", "SELECT * FROM no_such_table")
    assert failed.returncode != 0 and b"no_such_table" in failed.stderr


async def test_db_shell_opens_the_embedded_server_of_data_dir_and_stops_it_after(
    server_dir: Path, tmp_path: Path
):
    data_dir = server_dir / "data"
    config = write_config(tmp_path / "proxy.toml", data_dir=str(data_dir))
    assert (await ere_proxy(config, "db", "migrate")).returncode == 0  # the proxy's first start
    query = "SELECT current_database(), current_user, count(*) > 0 FROM schema_migrations"
    result = await ere_proxy(config, "db", "shell", "-A", "-t", "-c", query)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "ere_proxy|postgres|t\n"
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # started for the shell alone


async def test_psql_gets_the_password_in_its_environment_never_on_its_command_line(
    database_dsn: str, tmp_path: Path
):
    """`ps` shows every process's arguments: the DSN's password goes in PGPASSWORD."""
    stub = tmp_path / "bin" / "psql"  # records what it was given instead of connecting
    stub.parent.mkdir()
    stub.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/argv\necho "$PGPASSWORD" > {tmp_path}/env\n'
    )
    stub.chmod(0o755)
    dsn = database_dsn.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    config = write_config(tmp_path / "proxy.toml", dsn=dsn)
    env = dict(os.environ, PATH=f"{stub.parent}{os.pathsep}{os.environ['PATH']}")
    result = await ere_proxy(config, "db", "shell", "-c", "SELECT 1", env=env)
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv").read_text()
    assert "s3cret" not in argv and "--dbname=postgresql://postgres@/" in argv
    assert argv.endswith("-c SELECT 1\n")
    assert (tmp_path / "env").read_text() == "s3cret\n"
