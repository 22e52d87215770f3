"""The embedded PostgreSQL of a benchmark run: scratch directory, its processes, its CPU, its rows.

The proxy starts its embedded server with `pg_ctl`, which detaches the postmaster (it is *not* in
the proxy's process tree). We find it through `<data_dir>/postgres/postmaster.pid` and account
for the postmaster and its backends separately from the proxy. Backends and autovacuum workers
that exit during a window are included through the postmaster's reaped-children time.

Scratch directories are made under the system temp directory with mode 0711: as root the server
runs as an unprivileged user that must be able to enter them (like tests/store/helpers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import trio

from bench import procstat
from proxy.store.embedded import EmbeddedPostgres

# Session-capture tables, in the order reports list them.
TABLES = ("charger_events", "meter_samples", "sessions", "charger_boots", "measurands")


def make_data_dir(prefix: str = "ocpp-bench-pg-") -> Path:
    """A fresh directory an embedded server running as any user can use (mode 0711)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster of the embedded server in `data_dir`, or None."""
    try:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"postgres" in cmdline else None


def postgres_pids(data_dir: Path) -> set[int]:
    pid = postmaster_pid(data_dir)
    return set(procstat.tree(pid)) if pid else set()


def cpu_seconds(data_dir: Path) -> float:
    """CPU of the server: postmaster + live backends + children it has reaped (0 if not running)."""
    pid = postmaster_pid(data_dir)
    return procstat.cpu_seconds(pid, reaped=True) if pid else 0.0


def dsn(data_dir: Path, database: str = "ere_proxy") -> str:
    from proxy.store.embedded import EmbeddedPostgres

    return EmbeddedPostgres(data_dir).dsn(database)


def count_rows(data_dir: Path, timeout: float = 30.0) -> dict[str, int]:
    """Rows per capture table on the running server (over its unix socket)."""

    async def count() -> dict[str, int]:
        import asyncpg

        conn = await asyncpg.connect(dsn(data_dir), timeout=timeout)
        try:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
        finally:
            await conn.close()

    return asyncio.run(asyncio.wait_for(count(), timeout))


def stop_server(data_dir: Path, grace: float = 15.0) -> None:
    """Stop a postmaster left running in `data_dir` (fast shutdown, then immediate, then kill)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
        pid = postmaster_pid(data_dir)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and postmaster_pid(data_dir) == pid:
            time.sleep(0.1)


def remove_data_dir(data_dir: Path) -> None:
    stop_server(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


class ServerThread:
    """An embedded PostgreSQL kept running by a Trio run in a background thread until `close()`."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.server = EmbeddedPostgres(data_dir, settings=settings)  # default settings: fsync on
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._serve,), name="embedded-postgres"
        )

    def open(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    def crash(self) -> None:
        """SIGQUIT the postmaster (immediate shutdown, crash recovery at the next start)."""
        pid_file = self.server.pgdata / "postmaster.pid"
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while pid_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not go away after SIGQUIT")
            time.sleep(0.02)
        self.close()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        try:
            self._ready.set()
            await self._stop.wait()
        finally:
            await self.server.stop()
