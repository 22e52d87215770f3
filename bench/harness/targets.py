"""Starting and stopping what a scenario measures: the fake CSMS and the proxies in front of it.

Every process is fresh per run, listens on a free 127.0.0.1 port, writes its output to a log file
in the run's scratch directory, runs in its own process group (stopped as a group) and gets
SIGTERM if the bench dies. `start_target` raises `Unavailable` with a readable reason when a
target cannot be started (nginx not installed, the proxy not ready in time, ...).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.harness.peers import nginx
from bench.harness.processes import REPO, spawn
from testkit.ports import free_port
from testkit.postgres import make_data_dir, remove_data_dir, stop_server

# ere-proxy and ere-proxy-capture forward with the native engine, the -python ones with the Trio
# pumps (`[proxy] engine = "python"`, the reference path).
PROXY_TARGETS = ("ere-proxy", "ere-proxy-capture", "ere-proxy-python", "ere-proxy-capture-python")
TARGETS = ("direct", *PROXY_TARGETS, "nginx", "naive-trio-ws", "naive-websockets")
READY_TIMEOUT = 15.0
# ere-proxy-capture runs initdb for a fresh cluster before it serves (several seconds here).
CAPTURE_READY_TIMEOUT = 90.0


class Unavailable(Exception):
    """A target could not be started; the message says why."""


@dataclass
class Running:
    """A started process (or none, for `direct`) and the URL chargers connect to."""

    name: str
    url: str
    proc: subprocess.Popen | None = None
    log: Path | None = None
    admin_port: int | None = None  # ere-proxy*: the admin endpoint (/metrics, /readyz)
    data_dir: Path | None = None  # ere-proxy-capture: the embedded PostgreSQL's [database] data_dir

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def _start(name: str, argv: list[str], scratch: Path, url: str) -> Running:
    log = scratch / f"{name}.log"
    with log.open("wb") as out:
        proc = spawn(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    return Running(name, url, proc, log)


def _log_tail(running: Running, lines: int = 15) -> str:
    if running.log is None or not running.log.exists():
        return ""
    tail = running.log.read_text(errors="replace").strip().splitlines()[-lines:]
    return ("\n    " + "\n    ".join(tail)) if tail else ""


def _wait(running: Running, ready, what: str, timeout: float = READY_TIMEOUT) -> Running:
    """Poll `ready()` until true; stop the process and raise Unavailable on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.proc and running.proc.poll() is not None:
            stop(running)
            raise Unavailable(
                f"{running.name} exited with status {running.proc.returncode}{_log_tail(running)}"
            )
        if ready():
            return running
        time.sleep(0.05)
    stop(running)
    raise Unavailable(f"{running.name}: {what} not ready within {timeout:g} s{_log_tail(running)}")


def accepts(port: int) -> bool:
    """True when something listens on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_csms(scratch: Path, lifetime: float) -> tuple[Running, int]:
    """The fake CSMS on a free port; returns it and its port."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "testkit.fake_csms",
        "--port",
        str(port),
        "--max-seconds",
        str(lifetime),
    ]
    running = _start("fake-csms", argv, scratch, f"ws://127.0.0.1:{port}/ocpp")
    return _wait(running, lambda: accepts(port), f"port {port}"), port


def start_target(
    name: str,
    scratch: Path,
    csms_port: int,
    *,
    chargers: int,
    lifetime: float,
    ere_workers: int = 1,
    ere_extra_toml: str = "",
) -> Running:
    """Start target `name` in front of the fake CSMS on `csms_port`; return it once it serves."""
    upstream = f"ws://127.0.0.1:{csms_port}"
    if name == "direct":
        return Running(name, f"{upstream}/ocpp")
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ocpp"
    if name in PROXY_TARGETS:
        admin = free_port()
        capture = name.startswith("ere-proxy-capture")
        engine = "python" if name.endswith("-python") else "native"
        if capture:
            # A fresh cluster per run, in a 0711 dir the server's unprivileged user can enter;
            # default server settings (fsync on), as in production.
            data_dir = make_data_dir()
            storage = f'[capture]\nenabled = true\n[database]\ndata_dir = "{data_dir}"\n'
        else:
            data_dir = None
            storage = "[capture]\nenabled = false\n"  # pure forwarding
        config = scratch / f"{name}.toml"
        config.write_text(
            f'[proxy]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\nworkers = {ere_workers}\n'
            f'engine = "{engine}"\n'
            f'[admin]\nhost = "127.0.0.1"\nport = {admin}\n'
            f'[log]\nlevel = "warning"\n'
            + storage
            + f'[default_route]\nupstream = "{upstream}/ocpp"\nauth = "passthrough"\n'
            + (f"\n{ere_extra_toml}\n" if ere_extra_toml else "")
        )
        argv = [sys.executable, "-m", "proxy", "proxy", "--config", str(config)]
        running = _start(name, argv, scratch, url)
        running.admin_port, running.data_dir = admin, data_dir
        try:
            return _wait(
                running,
                lambda: _http_ok(f"http://127.0.0.1:{admin}/readyz"),
                "/readyz",
                CAPTURE_READY_TIMEOUT if capture else READY_TIMEOUT,
            )
        except Unavailable:
            if data_dir is not None:
                remove_data_dir(data_dir)
            raise
    if name == "nginx":
        binary = nginx.find_nginx()
        if binary is None:
            raise Unavailable(f"nginx is not installed; {nginx.INSTALL_HINT}")
        conf = nginx.write_config(scratch / "nginx", port, csms_port, chargers)
        return _wait(
            _start(name, nginx.command(binary, conf), scratch, url),
            lambda: accepts(port),
            f"port {port}",
        )
    if name in ("naive-trio-ws", "naive-websockets"):
        module = "bench.harness.peers." + name.replace("-", "_")
        argv = [
            sys.executable,
            "-m",
            module,
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--max-seconds",
            str(lifetime),
        ]
        return _wait(_start(name, argv, scratch, url), lambda: accepts(port), f"port {port}")
    raise Unavailable(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def stop(running: Running, grace: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if still running after `grace` seconds.

    An embedded PostgreSQL (ere-proxy-capture) is stopped by the proxy itself on SIGTERM; if it
    is still running afterwards it is stopped here, and its data directory is removed.
    """
    try:
        _stop_group(running, grace)
    finally:
        if running.data_dir is not None:
            stop_server(running.data_dir)
            if running.log is not None:  # keep the server's log with the run's other logs
                with contextlib.suppress(OSError):
                    shutil.copyfile(
                        running.data_dir / "postgres.log", running.log.parent / "postgres.log"
                    )
            remove_data_dir(running.data_dir)
            running.data_dir = None


def _stop_group(running: Running, grace: float) -> None:
    proc = running.proc
    if proc is None:
        return
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
