"""The proxy under test, run as its own process the way an operator runs it.

`python -m proxy proxy --config FILE` is started with a configuration on free ports, awaited on
its admin `/readyz`, stopped with SIGTERM, and its JSON log on stderr is checked: the process
must exit 0 and log no error and no traceback.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from testkit.engines import with_engine
from testkit.ports import free_port

REPO = Path(__file__).resolve().parents[1]
READY_WAIT = 15.0  # bound on the proxy's start-up
STOP_WAIT = 20.0  # bound on a graceful stop (drain + close timeouts are set far below this)

CONFIG = """\
[proxy]
host = "127.0.0.1"
port = {port}
path_prefix = "/ocpp"
close_timeout = 2.0
drain_timeout = 2.0

[admin]
host = "127.0.0.1"
port = {admin_port}

[log]
level = "info"

[capture]
enabled = false

[registry]
enabled = false

[outbox]
enabled = false

[chargers."CP-16"]
upstream = "ws://127.0.0.1:{upstream_port}/ocpp"
auth = "passthrough"

[default_route]
upstream = "ws://127.0.0.1:{upstream_port}/ocpp"
auth = "passthrough"
"""

# urllib must not send loopback requests through an HTTP proxy from the environment.
_admin_client = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class ProxyProcess:
    """A running proxy process; chargers reach it at `url(identity)`, its upstream is `upstream_port`."""

    port: int
    admin_port: int
    upstream_port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path
    host: str = "127.0.0.1"  # its charger and admin address

    def url(self, identity: str) -> str:
        return f"ws://{self.host}:{self.port}/ocpp/{quote(identity, safe='')}"

    def admin_get(self, path: str) -> tuple[int, bytes]:
        """Status and body of a GET on the admin port."""
        try:
            with _admin_client.open(
                f"http://{self.host}:{self.admin_port}{path}", timeout=2
            ) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def terminate(self) -> int:
        """Send SIGTERM (unless it already exited) and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def wait_ready(proxy: ProxyProcess) -> None:
    """Poll /readyz until it answers 200; fail early if the process dies, or after READY_WAIT."""
    deadline = time.monotonic() + READY_WAIT
    while True:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"proxy exited with {proxy.process.returncode}:\n{proxy.stderr()}")
        try:
            if proxy.admin_get("/readyz")[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy not ready after {READY_WAIT} s:\n{proxy.stderr()}")
        time.sleep(0.05)


def log_problems(stderr: str) -> list[str]:
    """Lines of the proxy's stderr that are not JSON records, are errors, or carry a traceback."""
    problems = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(line)
            continue
        if (
            not isinstance(record, dict)
            or record.get("level") in ("error", "critical")
            or "Traceback" in line
        ):
            problems.append(line)
    return problems


def metric(proxy: ProxyProcess, name: str) -> float:
    """The value of the unlabelled series `name` on the admin /metrics."""
    status, body = proxy.admin_get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def spawn_proxy(
    config: Path,
    stderr_path: Path,
    ports: tuple[int, int, int],
    *,
    host: str = "127.0.0.1",
    append: bool = False,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> ProxyProcess:
    """`ere-proxy proxy --config CONFIG`, its stderr into `stderr_path` (appended to with
    `append`), once ready; `ports`: its (charger, admin, upstream) ports. A proxy that does not
    become ready is stopped before the error is raised."""
    with stderr_path.open("ab" if append else "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "proxy", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            preexec_fn=preexec_fn,
        )
    proxy = ProxyProcess(*ports, process, stderr_path, host)
    try:
        wait_ready(proxy)
    except BaseException:
        with suppress(subprocess.TimeoutExpired):
            proxy.terminate()
        raise
    return proxy


def upgrade_status(proxy: ProxyProcess, identity: str, extra_headers: str = "") -> bytes:
    """The status line the proxy answers a WebSocket upgrade for `identity` with."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            f"GET /ocpp/{identity} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n".encode()
        )
        return sock.recv(4096).split(b"\r\n")[0]


def start_capture_proxy(
    directory: Path,
    data_dir: Path,
    dsn: str,
    *,
    upstream_port: int | None = None,
    capture: str = "",
    routes: str = "",
) -> ProxyProcess:
    """A proxy with session capture on into `dsn` (its spill log under `data_dir / "proxy"`), ready;
    the caller stops it. Its stderr goes to a new file in `directory` each time. `upstream_port`:
    the back-office of every route (default: a free port, nothing listening); `capture`: more
    [capture] settings (TOML lines); `routes`: more tables (e.g. [chargers."ID"] routes)."""
    port, admin_port = free_port(), free_port()
    upstream_port = free_port() if upstream_port is None else upstream_port
    config = directory / "proxy.toml"
    text = with_engine(CONFIG).replace(
        "[capture]\nenabled = false\n", f"[capture]\nenabled = true\n{capture}"
    )
    text += f'\n[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir / "proxy"}"\n{routes}'
    config.write_text(text.format(port=port, admin_port=admin_port, upstream_port=upstream_port))
    stderr_path = directory / f"proxy-{time.monotonic_ns()}.stderr"
    return spawn_proxy(config, stderr_path, (port, admin_port, upstream_port))


@contextmanager
def running_proxy(
    directory: Path,
    template: str = CONFIG,
    args: tuple[str, ...] = (),
    expected_errors: tuple[str, ...] = (),
) -> Iterator[ProxyProcess]:
    """Start a proxy whose routes all lead to 127.0.0.1:<upstream_port>; stop and check it on exit.

    `template` is the configuration with {port}, {admin_port} and {upstream_port} to fill in;
    the filled-in file is `directory / "proxy.toml"`. Error lines containing one of
    `expected_errors` are what the test provoked and do not fail the check.
    """
    # Worker i of a multi-worker proxy serves its admin endpoint on admin_port + i.
    admin_port = free_port(consecutive=4)
    port, upstream_port = free_port(), free_port()
    while {port, upstream_port} & set(range(admin_port, admin_port + 4)):
        port, upstream_port = free_port(), free_port()
    config = directory / "proxy.toml"
    config.write_text(
        with_engine(template).format(port=port, admin_port=admin_port, upstream_port=upstream_port)
    )
    stderr_path = directory / "proxy.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "proxy", "--config", str(config), *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    proxy = ProxyProcess(port, admin_port, upstream_port, process, stderr_path)
    try:
        wait_ready(proxy)
        yield proxy
    finally:
        status = proxy.terminate()
    output = proxy.stderr()
    assert status == 0, f"proxy exited with {status}:\n{output}"
    problems = [
        line for line in log_problems(output) if not any(e in line for e in expected_errors)
    ]
    assert problems == [], output
