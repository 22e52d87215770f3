"""Faults a real Prometheus sees, for the end-to-end tests of the proxy's alerts.

Pieces the alert tests share beside `testkit.prometheus`: a Prometheus configuration that scrapes
only proxies (`proxy_prometheus_config`), proxy processes with an open-file limit of their own
(`spawn_limited_proxy`), simulated fleets (`start_fleet`), descriptors held on a proxy by
connections that never send a byte (`IdleConnections`), certificates that end soon
(`write_certificate`), back-offices on wss (`tls_back_office`) and failing every upgrade
(`failing_back_office`), and bounded waits on alert states (`firing`, `evaluated_since`,
`alerts_on_normal_load`).
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio
import trustme

from testkit import websocket
from testkit.ports import free_port
from testkit.prometheus import WAIT, Prometheus, prometheus_config
from testkit.proxy_process import REPO, ProxyProcess, spawn_proxy
from testkit.waiting import until

ALERT_WAIT = 60.0  # bound on an alert reaching `firing` once its fault is there


# -- Prometheus ---------------------------------------------------------------------------------------


def proxy_prometheus_config(directory: Path, admin_ports: Sequence[int]) -> Path:
    """`prometheus_config` with only the ere-proxy job, scraping every proxy of `admin_ports`: no
    worker or API target that would be down (and fire its alert) in a run without them."""
    path = prometheus_config(directory, admin_ports[0], free_port(), free_port())
    config = json.loads(path.read_text())
    config["scrape_configs"] = [
        {
            "job_name": "ere-proxy",
            "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in admin_ports]}],
        }
    ]
    path.write_text(json.dumps(config, indent=2))
    return path


def alert_states(prometheus: Prometheus) -> dict[tuple[str, str], str]:
    """(alert name, severity) -> its most advanced state (firing over pending)."""
    states: dict[tuple[str, str], str] = {}
    for alert in prometheus.alerts():
        key = alert["labels"]["alertname"], alert["labels"].get("severity", "")
        if states.get(key) != "firing":
            states[key] = alert["state"]
    return states


async def firing(
    prometheus: Prometheus, fired: set[str], name: str, *severities: str, limit: float = ALERT_WAIT
) -> None:
    """Wait until alert `name` fires at each of `severities` (any one when none is given);
    `fired` collects the name."""
    for severity in severities or ("",):

        def fires(severity: str = severity) -> bool:
            return any(
                alert == name and state == "firing" and severity in ("", level)
                for (alert, level), state in alert_states(prometheus).items()
            )

        await until(fires, f"alert {name} {severity or ''} firing", limit)
    fired.add(name)


def _epoch(timestamp: str) -> float:
    """An RFC 3339 time of Prometheus's API (nanosecond fractions) as seconds since the epoch."""
    whole, _, rest = timestamp.partition(".")
    fraction = "".join(c for c in rest if c.isdigit())
    seconds = datetime.datetime.fromisoformat(whole.rstrip("Z") + "+00:00").timestamp()
    return seconds + (float("0." + fraction) if fraction else 0.0)


async def evaluated_since(prometheus: Prometheus, name: str, since: float) -> list[str]:
    """Wait until every rule of alert `name` was evaluated after `since` (epoch seconds); their
    states then."""

    def rules() -> list[dict[str, object]]:
        return [rule for rule in prometheus.rules() if rule["name"] == name]

    def evaluated() -> bool:
        found = rules()
        return bool(found) and all(
            _epoch(str(rule["lastEvaluation"])) > since and rule["health"] == "ok" for rule in found
        )

    await until(evaluated, f"rules {name} evaluated", ALERT_WAIT)
    return [str(rule["state"]) for rule in await trio.to_thread.run_sync(rules)]


# The 3-day ticket of the latency objective: on a shared two-core machine, with Prometheus,
# PostgreSQL and the simulators beside the proxy, over 1 % of its chunks can wait for a CPU.
LATENCY_TICKET = {"alertname": "ForwardingLatencyBudgetBurn", "severity": "warning"}
NORMAL_VOLUME = 3000  # forwarded chunks before the burn rates count as normal load


async def alerts_on_normal_load(prometheus: Prometheus) -> list[dict[str, str]]:
    """The labels of every alert pending or firing once the proxy has forwarded NORMAL_VOLUME
    chunks and every alert has been evaluated on them, except LATENCY_TICKET.

    The burn rates are judged on normal load, not on a fleet's connection storm: a few chunks
    delayed while chargers handshake at once weigh much in a few hundred. The latency page (14.4
    times the budget) is still held to nothing; test_prometheus_ere_alerts.py provokes both
    latency alerts with a slow back-office."""
    await until(
        lambda: prometheus.has_data(
            f"slo:ere_proxy_forwarding_latency_events:increase3d >= {NORMAL_VOLUME}"
        ),
        "normal forwarding volume",
        WAIT,
    )
    reached = time.time()
    await until(lambda: prometheus.alerts_evaluated_since(reached), "every alert evaluated", WAIT)
    alerts = await trio.to_thread.run_sync(prometheus.alerts)
    return [a["labels"] for a in alerts if a["labels"] != LATENCY_TICKET]


# -- processes ----------------------------------------------------------------------------------------


def spawn_limited_proxy(
    directory: Path,
    name: str,
    config_text: str,
    port: int,
    admin_port: int,
    upstream_port: int,
    *,
    open_files: int | None = None,
) -> ProxyProcess:
    """`ere-proxy proxy` on `config_text` (written to `name`.toml), ready; with `open_files` its
    open-file limit (soft and hard: the proxy raises the soft one to the hard one at start)."""
    config = directory / f"{name}.toml"
    config.write_text(config_text)

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    return spawn_proxy(
        config,
        directory / f"{name}.stderr",
        (port, admin_port, upstream_port),
        preexec_fn=limit_open_files,
    )


def start_fleet(
    directory: Path, proxy: ProxyProcess, prefix: str, chargers: int, ramp: float = 5.0
) -> subprocess.Popen[bytes]:
    """`chargers` simulated chargers (<prefix><index:05d>) on `proxy` until killed: charging
    sessions back to back, a meter reading every 2 s, reconnecting with back-off when refused."""
    with (directory / f"{prefix}.json").open("wb") as out:
        with (directory / f"{prefix}.stderr").open("wb") as err:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.load.simulator",
                    "--url",
                    f"ws://127.0.0.1:{proxy.port}/ocpp",
                    "--chargers",
                    str(chargers),
                    "--protocol",
                    "mixed",
                    "--sessions",
                    "0",
                    "--samples",
                    "3",
                    "--interval",
                    "2",
                    "--heartbeat",
                    "10",
                    "--duration",
                    "900",
                    "--max-seconds",
                    "1200",
                    "--call-timeout",
                    "30",
                    "--ramp",
                    str(ramp),
                    "--prefix",
                    prefix,
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL (its chargers' connections drop at once) and reap."""
    if process is not None and process.poll() is None:
        process.kill()
    if process is not None:
        process.wait()


def open_descriptors(process: subprocess.Popen[bytes]) -> int:
    """The descriptors `process` has open now (Linux /proc)."""
    return len(os.listdir(f"/proc/{process.pid}/fd"))


class IdleConnections:
    """TCP connections to a port that never send a byte: each one the proxy accepts holds one of
    its descriptors (until the handshake timeout); those it cannot accept wait in the backlog."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []

    def open(self, count: int) -> None:
        for _ in range(count):
            self.sockets.append(socket.create_connection(("127.0.0.1", self.port), timeout=10))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


# -- certificates and a back-office on wss ------------------------------------------------------------


def write_certificate(ca: trustme.CA, directory: Path, stem: str, days: float) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 from `ca` that ends `days` from now: (certificate, key) files."""
    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    leaf = ca.issue_cert("127.0.0.1", not_after=not_after)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def tls_back_office(stream: trio.SSLStream[trio.SocketStream]) -> None:
    """A back-office on wss: it accepts the WebSocket upgrade (ocpp1.6), then reads until the
    proxy goes away."""
    try:
        accepted = await websocket.server_handshake(stream, "/ocpp/", ("ocpp1.6",))
        while accepted is not None and await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def failing_back_office(stream: trio.SocketStream) -> None:
    """A back-office that answers every WebSocket upgrade with 503 (the proxy: upstream_error)."""
    request = b""
    try:
        while b"\r\n\r\n" not in request and (data := await stream.receive_some(65536)):
            request += data
        await stream.send_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


# -- waiting on a process's log -----------------------------------------------------------------------


def logged(proxy: ProxyProcess, text: str) -> Callable[[], bool]:
    """A check: `text` appears in the proxy's log."""
    return lambda: text in proxy.stderr()
