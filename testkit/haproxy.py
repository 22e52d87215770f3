"""HAProxy (Debian's package) in TCP mode in front of proxy nodes, configured from the example.

The configuration is `examples/haproxy.cfg` with its `bind` and `server` lines replaced by the
test's addresses, so the example an operator copies is the one under test. HAProxy runs in the
foreground (`-db`) as a child process; `running_haproxy` stops it on exit.
"""

from __future__ import annotations

import re
import resource
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testkit.proxy_process import REPO
from testkit.waiting import wait_until

TEMPLATE = REPO / "examples" / "haproxy.cfg"
START_WAIT = 10.0  # bound on HAProxy's start-up
STOP_WAIT = 10.0


@dataclass(frozen=True)
class Backend:
    """A proxy node as HAProxy sees it: charger address and port, admin port for its checks."""

    name: str
    host: str
    port: int
    admin_port: int


def render(template: str, bind: str, backends: Sequence[Backend], maxconn: int) -> str:
    """The template with its `bind` line on `bind`, its `server` lines for `backends` (their
    options, and the health check on each backend's admin port, as the first server line has),
    and every `maxconn` at most `maxconn` (HAProxy refuses to start beyond its file limit)."""
    template = re.sub(
        r"maxconn (\d+)", lambda m: f"maxconn {min(int(m.group(1)), maxconn)}", template
    )
    lines = template.splitlines()
    servers = [i for i, line in enumerate(lines) if line.strip().startswith("server ")]
    binds = [i for i, line in enumerate(lines) if line.strip().startswith("bind ")]
    if not servers or len(binds) != 1:
        raise ValueError("the template needs one bind line and at least one server line")
    first = lines[servers[0]]
    indent = first[: len(first) - len(first.lstrip())]
    options = " ".join(first.split("#", 1)[0].split()[3:])  # after "server <name> <address>"
    lines[binds[0]] = re.sub(r"bind \S+", f"bind {bind}", lines[binds[0]])
    lines[servers[0] : servers[-1] + 1] = [
        f"{indent}server {b.name} {b.host}:{b.port} "
        + re.sub(r"\bport \d+", f"port {b.admin_port}", options)
        for b in backends
    ]
    return "\n".join(lines) + "\n"


@dataclass
class HAProxy:
    """A running HAProxy: chargers connect to `host`:`port`."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path


@contextmanager
def running_haproxy(
    directory: Path, host: str, port: int, backends: Sequence[Backend]
) -> Iterator[HAProxy]:
    """HAProxy on `host`:`port` balancing over `backends`, listening before this yields."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    config = directory / "haproxy.cfg"
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # Two descriptors a connection, and a margin for the rest.
    maxconn = (files - 100) // 2 if files != resource.RLIM_INFINITY else 1_000_000
    config.write_text(render(TEMPLATE.read_text(), f"{host}:{port}", backends, maxconn))
    subprocess.run([binary, "-c", "-q", "-f", str(config)], check=True)
    log_path = directory / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = HAProxy(host, port, process, log_path)

    def listening() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_until(listening, "HAProxy", START_WAIT)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()  # hard stop: every connection through it is closed
        try:
            process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
