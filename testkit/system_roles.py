"""The whole system on a given day: `ere-proxy run` (every role, the embedded PostgreSQL) and the
operator's `ere-proxy` commands under libfaketime, 1.6 chargers charging through the proxy,
and reads of the database the roles share.

`Roles.on(day)` starts every role with the clock of `day` and yields an `Operator` whose
commands run on that day; leaving the block stops the roles (SIGTERM) and asserts a clean exit.
`charge` drives (charger, start, kWh) sessions as an `ocpp` package 1.6 charger sends them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from ocpp.v16 import call as call16

from proxy.store.embedded import EmbeddedPostgres
from testkit.ocpp_peers import TIMEOUT, Charger16, CsmsServer, open_charger
from testkit.proxy_process import REPO

__all__ = [
    "FAKETIME_LIB",
    "Operator",
    "Roles",
    "charge",
    "on_day",
    "query",
    "ready",
    "stamp",
    "wait_for_sessions",
]

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def on_day(day: str) -> dict[str, str]:
    """The environment of a process whose clock starts at `day` (UTC) and runs on from there."""
    return os.environ | {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": f"@{day}", "TZ": "UTC"}


def ready(port: int) -> bool:
    try:
        with _local.open(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Operator:
    """`ere-proxy` commands as an operator types them, on the day of a chapter."""

    def __init__(self, config: Path, day: str) -> None:
        self.config = config
        self.day = day

    def run(self, *args: str, expect: int = 0, stdin: str = "") -> str:
        """The command's stdout (its stderr when `expect` is not 0); `stdin` is its input."""
        result = subprocess.run(
            [sys.executable, "-m", "proxy", *args, "--config", str(self.config)],
            cwd=REPO,
            env=on_day(self.day),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == expect, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout if expect == 0 else result.stderr


@dataclass(frozen=True)
class Roles:
    """Where the roles of `ere-proxy run` listen, and how to start them on a given day."""

    config: Path
    port: int
    admin_port: int
    worker_admin: int
    upstream_port: int
    log: Path

    def url(self, identity: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{identity}"

    @contextmanager
    def on(self, day: str) -> Iterator[Operator]:
        """Every role running with the clock of `day`; the operator's commands on that day."""
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run", "--config", str(self.config)],
                cwd=REPO,
                env=on_day(day),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            deadline = time.monotonic() + 120
            while not (ready(self.admin_port) and ready(self.worker_admin)):
                assert process.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "the roles did not get ready"
                time.sleep(0.1)
            yield Operator(self.config, day)
        finally:
            process.terminate()
            status = process.wait(60)
        assert status == 0, self.log.read_text()


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def charge(
    roles: Roles,
    sessions: list[tuple[str, str, str]],
    headers: Mapping[str, dict[str, str]] | None = None,
) -> None:
    """Each (charger, start, kWh) as a 1.6 charger sends it: boot, start, stop six hours later;
    `headers` by charger are sent in its upgrade request (its credentials)."""
    async with asyncio.timeout(TIMEOUT * len(sessions)), CsmsServer(roles.upstream_port):
        for identity, start, kwh in sessions:
            began = datetime.fromisoformat(start)
            async with open_charger(
                roles.url(identity),
                ["ocpp1.6"],
                Charger16,
                identity,
                headers=(headers or {}).get(identity),
            ) as charger:
                cp = charger.cp
                await cp.call(
                    call16.BootNotification(
                        charge_point_model="HomeBox",
                        charge_point_vendor="Example",
                        meter_type="Iskra WM3M4",  # on the MID list: "declared" evidence
                        meter_serial_number=f"SN-{identity}",
                    )
                )
                started = await cp.call(
                    call16.StartTransaction(
                        connector_id=1, id_tag="TAG", meter_start=1000, timestamp=stamp(began)
                    )
                )
                await cp.call(
                    call16.StopTransaction(
                        meter_stop=1000 + int(Decimal(kwh) * 1000),
                        timestamp=stamp(began + timedelta(hours=6)),
                        transaction_id=started.transaction_id,
                    )
                )


async def query(data_dir: Path, sql: str, *args: object) -> list[tuple]:
    conn = await asyncpg.connect(EmbeddedPostgres(data_dir).dsn("ere_proxy"))
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def wait_for_sessions(data_dir: Path, count: int) -> None:
    """Until capture has stored `count` completed sessions (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    sql = "SELECT count(*) FROM sessions WHERE status = 'completed'"
    while (stored := asyncio.run(query(data_dir, sql))[0][0]) < count:
        assert time.monotonic() < deadline, f"{stored} of {count} sessions stored"
        time.sleep(0.1)
