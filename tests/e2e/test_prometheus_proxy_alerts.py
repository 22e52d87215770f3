"""A real Prometheus sees the proxy's service-level, fleet, capacity, outbox and certificate alerts
fire, each from its own fault, and none of them under normal load.

Set up once: PostgreSQL, the fake back-office (`testkit.fake_csms.FakeCsms`) and a back-office on
wss (a certificate ending in 2 days) in this process; the proxy under test as a process with an
open-file limit of OPEN_FILES (so CHARGER_CAPACITY chargers), the outbox on with a bound of
OUTBOX_ENTRIES entries in all, the chargers FAILING00000.. routed to a back-office that answers
every upgrade with 503 and TLS-1 to the wss back-office; a second proxy with a TLS listener; simulated chargers
(`bench.load.simulator`); and Prometheus (the Debian package) scraping both proxies every second
with the rules of `grafana/recording.yml` and `grafana/alerts.yml`, every `for:` shortened to 1 s.

Under normal load (FLEET chargers connect and charge, over 100 handshakes in the window, so the
burn-rate alerts' minimum-volume guard is met) every alert of PROVOKED is evaluated and inactive,
and, once the fleet has forwarded a few thousand chunks, no alert at all is pending or firing but
the latency objective's ticket (`alerts_on_normal_load`). Then, in sequence, each fault makes its
alerts fire (warning and critical where the rule has both):

- FAILING chargers whose back-office fails them (503: outcome upstream_error) keep trying:
  HandshakeErrorBudgetBurn, the page and the ticket (over [3d] with minutes of data the rate is
  that of those minutes). An unreachable back-office would not do: with the outbox on its
  chargers are admitted offline, or refused as `offline_unproven`, which the SLI leaves out;
- the TLS listener's certificate replaced by one ending in 2 days (SIGHUP): CertificateExpiresSoon;
  TLS-1 connects, so the proxy dials the wss back-office: UpstreamCertificateExpiresSoon;
- SURGE more chargers, past 90 % of the proxy's capacity: ProxyChargerCapacityHigh; connections
  that never send a byte take its descriptors past 90 % of the limit: ProxyFileDescriptorsHigh;
  more of them than it has descriptors left, so accept() fails (EMFILE), then all closed:
  ProxyAcceptErrors;
- the SURGE chargers gone at once, a third of the fleet: ChargersDisconnected;
- the back-office stopped while the fleet keeps charging: the outbox fills (OutboxNearlyFull,
  OutboxFillsSoon) to its bound, and the chargers are closed for it (link end outbox_full):
  ForwardingErrorBudgetBurn, the page and the ticket.

Other alerts fire along the way (UpstreamDown, OutboxGrowing, OutboxFull; ProxyDown while the
proxy cannot accept its scrapes); test_prometheus.py shows those. Prometheus must be installed
(`scripts/setup-debian`); without it the test fails, it never skips.
"""

from __future__ import annotations

import math
import shutil
import signal
import ssl
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from proxy.runtime.role import charger_capacity
from testkit.fake_csms import FakeCsms
from testkit.grafana import CERTIFICATE_PANELS, dashboards, panel_queries, resolve
from testkit.ports import free_port
from testkit.postgres import create_database, make_data_dir, start_database
from testkit.prometheus import PROXY_FAULT_ALERTS, WAIT, Prometheus, require
from testkit.prometheus_faults import (
    IdleConnections,
    alerts_on_normal_load,
    evaluated_since,
    failing_back_office,
    firing,
    kill,
    logged,
    open_descriptors,
    proxy_prometheus_config,
    spawn_limited_proxy,
    start_fleet,
    tls_back_office,
    write_certificate,
)
from testkit.proxy_process import CONFIG, ProxyProcess, log_problems, metric
from testkit.raw_charger import RawCharger
from testkit.waiting import until

pytestmark = pytest.mark.slow

PROVOKED = PROXY_FAULT_ALERTS
OPEN_FILES = 420  # the proxy's open-file limit
CHARGER_CAPACITY = charger_capacity(OPEN_FILES)  # 178
FLEET = 110  # normal load: over 100 handshakes, under 70 % of the capacity
SURGE = 55  # FLEET + SURGE: over 90 % of the capacity; SURGE alone: over a quarter of the fleet
FAILING = 30  # chargers whose back-office fails every upgrade (503)
OUTBOX_ENTRIES = 300  # [outbox] max_entries_total: FLEET fills it within seconds
DESCRIPTORS_HIGH = 0.93  # share of the open-file limit held for ProxyFileDescriptorsHigh
# Out of descriptors, the charger listener says so (rate-limited), and so does the admin port
# when a scrape comes in meanwhile.
EXPECTED_ERRORS = ("cannot accept chargers", "cannot accept admin connections")


def main_config(
    port: int, admin_port: int, upstream_port: int, dsn: str, data_dir: Path, ca_file: Path
) -> tuple[str, int, int]:
    """The proxy under test's configuration; with the ports of FAILING's and TLS-1's back-offices."""
    failing_port, tls_port = free_port(), free_port()
    text = CONFIG.replace(
        "drain_timeout = 2.0\n", "drain_timeout = 2.0\nhandshake_timeout = 300.0\n"
    )
    text = text.replace(
        "[outbox]\nenabled = false\n",
        "[outbox]\nenabled = true\nredial_min = 0.5\nredial_max = 1.0\n"
        f"max_entries_total = {OUTBOX_ENTRIES}\n",
    )
    text = text.format(port=port, admin_port=admin_port, upstream_port=upstream_port)
    for index in range(FAILING):
        text += (
            f'\n[chargers."FAILING{index:05d}"]\nupstream = "ws://127.0.0.1:{failing_port}/ocpp"\n'
        )
    text += (
        f'\n[chargers."TLS-1"]\nupstream = "wss://127.0.0.1:{tls_port}/ocpp"\nca_bundle = "{ca_file}"\n'
        f'\n[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir / "proxy"}"\n'
    )
    return text, failing_port, tls_port


def tls_config(port: int, admin_port: int, upstream_port: int, cert: Path, key: Path) -> str:
    """A proxy with a TLS listener on `cert` and nothing else on."""
    text = CONFIG.replace(
        "drain_timeout = 2.0\n", f'drain_timeout = 2.0\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    return text.format(port=port, admin_port=admin_port, upstream_port=upstream_port)


def start_proxies(
    directory: Path, data_dir: Path, dsn: str, csms_port: int, ca: trustme.CA, ca_file: Path
) -> tuple[ProxyProcess, ProxyProcess, int, int]:
    """The proxy under test and the TLS proxy, ready; the ports of FAILING's and TLS-1's
    back-offices."""
    port, admin_port = free_port(), free_port()
    text, failing_port, tls_port = main_config(port, admin_port, csms_port, dsn, data_dir, ca_file)
    proxy = spawn_limited_proxy(
        directory, "proxy", text, port, admin_port, csms_port, open_files=OPEN_FILES
    )
    cert, key = write_certificate(ca, directory, "listener", days=365)
    port, admin_port, upstream_port = free_port(), free_port(), free_port()
    text = tls_config(port, admin_port, upstream_port, cert, key)
    tls_proxy = spawn_limited_proxy(directory, "tls-proxy", text, port, admin_port, upstream_port)
    return proxy, tls_proxy, failing_port, tls_port


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-prometheus-proxy-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_each_proxy_fault_fires_its_alerts_and_normal_load_none(tmp_path, data_dir):
    binary = require("prometheus")
    database = await trio.to_thread.run_sync(start_database, data_dir)
    dsn = await trio.to_thread.run_sync(create_database, database)
    csms = FakeCsms(port=free_port(), record=False)
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    back_office = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    back_office.load_cert_chain(*write_certificate(ca, tmp_path, "back-office", days=2))
    proxy = tls_proxy = prometheus = fleet = failing = surge = None
    idle: IdleConnections | None = None
    fired: set[str] = set()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.serve)
            proxy, tls_proxy, failing_port, tls_port = await trio.to_thread.run_sync(
                start_proxies, tmp_path, data_dir, dsn, csms.port, ca, ca_file
            )
            await nursery.start(
                partial(trio.serve_tcp, failing_back_office, failing_port, host="127.0.0.1")
            )
            await nursery.start(
                partial(
                    trio.serve_ssl_over_tcp,
                    tls_back_office,
                    tls_port,
                    back_office,
                    host="127.0.0.1",
                )
            )
            assert metric(proxy, "ere_proxy_charger_capacity") == CHARGER_CAPACITY
            config = proxy_prometheus_config(tmp_path, [proxy.admin_port, tls_proxy.admin_port])
            prometheus = Prometheus(binary, config, tmp_path)
            await until(prometheus.ready, "Prometheus ready", WAIT)
            await until(
                lambda: prometheus.has_data('count(up{job="ere-proxy"} == 1) == 2'),
                "both proxies scraped",
                WAIT,
            )

            # Normal load: the fleet connects and charges; every alert is evaluated and quiet.
            fleet = start_fleet(tmp_path, proxy, "FLEET", FLEET, ramp=10)
            await until(
                lambda: metric(proxy, "ere_proxy_connected_chargers") == FLEET, "the fleet", WAIT
            )
            await until(
                lambda: prometheus.has_data("slo:ere_proxy_handshake_events:increase1h >= 100"),
                "the handshake volume guard met",
                WAIT,
            )
            since = time.time()
            for name in sorted(PROVOKED):
                assert set(await evaluated_since(prometheus, name, since)) == {"inactive"}, name
            assert await alerts_on_normal_load(prometheus) == []

            # Chargers whose back-office fails every upgrade keep trying.
            failing = start_fleet(tmp_path, proxy, "FAILING", FAILING)
            await firing(prometheus, fired, "HandshakeErrorBudgetBurn", "critical", "warning")
            failed = 'sum(ere_proxy_handshakes_total{outcome="upstream_error"}) >= 1'
            assert await trio.to_thread.run_sync(prometheus.has_data, failed)
            kill(failing)

            # Certificates near their end: the listener's (reloaded), and a back-office's.
            write_certificate(ca, tmp_path, "listener", days=2)
            tls_proxy.process.send_signal(signal.SIGHUP)
            await firing(prometheus, fired, "CertificateExpiresSoon", "warning", "critical")
            charger = await RawCharger.connect(proxy.port)
            async with charger.stream:
                head = await charger.upgrade("TLS-1")
                assert head.startswith(b"HTTP/1.1 101"), head
            await firing(prometheus, fired, "UpstreamCertificateExpiresSoon", "warning", "critical")
            # The dashboards' certificate panels have data (tests/e2e/test_prometheus.py has no TLS).
            shown = [
                (name, title, resolve(expr))
                for name, dashboard in dashboards().items()
                for title, expr in panel_queries(dashboard)
                if title in CERTIFICATE_PANELS
            ]
            assert {title for _, title, _ in shown} == CERTIFICATE_PANELS
            for name, title, expr in shown:
                assert await trio.to_thread.run_sync(prometheus.has_data, expr), (name, title)

            # More chargers than the open-file limit comfortably holds, then idle connections.
            surge = start_fleet(tmp_path, proxy, "SURGE", SURGE)
            await until(
                lambda: metric(proxy, "ere_proxy_connected_chargers") == FLEET + SURGE,
                "the surge",
                WAIT,
            )
            await firing(prometheus, fired, "ProxyChargerCapacityHigh", "warning", "critical")
            idle = IdleConnections(proxy.port)
            held = math.ceil(DESCRIPTORS_HIGH * OPEN_FILES) - open_descriptors(proxy.process)
            await trio.to_thread.run_sync(idle.open, max(0, held))
            await firing(prometheus, fired, "ProxyFileDescriptorsHigh", "warning", "critical")
            beyond = OPEN_FILES - open_descriptors(proxy.process) + 10
            await trio.to_thread.run_sync(idle.open, beyond)
            await until(logged(proxy, "cannot accept chargers"), "accept() failing", WAIT)
            idle.close()
            await firing(prometheus, fired, "ProxyAcceptErrors")

            # A third of the fleet drops at once.
            kill(surge)
            await firing(prometheus, fired, "ChargersDisconnected")

            # The back-office goes down while the fleet keeps charging: the outbox fills up.
            await csms.stop()
            await firing(prometheus, fired, "OutboxNearlyFull", "warning", "critical")
            await firing(prometheus, fired, "OutboxFillsSoon")
            await firing(prometheus, fired, "ForwardingErrorBudgetBurn", "critical", "warning")
            closed = 'sum(ere_proxy_link_ends_total{reason="outbox_full"}) >= 1'
            assert await trio.to_thread.run_sync(prometheus.has_data, closed)

            kill(fleet)
            assert await trio.to_thread.run_sync(proxy.terminate) == 0
            assert await trio.to_thread.run_sync(tls_proxy.terminate) == 0
            nursery.cancel_scope.cancel()
    finally:
        if idle is not None:
            idle.close()
        for simulator in (fleet, failing, surge):
            kill(simulator)
        for running in (proxy, tls_proxy):
            if running is not None:
                await trio.to_thread.run_sync(running.terminate)
        if prometheus is not None:
            await trio.to_thread.run_sync(prometheus.stop)
        await trio.to_thread.run_sync(database.close)

    assert fired == PROVOKED
    for log in ("proxy.stderr", "tls-proxy.stderr"):
        problems = [
            line
            for line in log_problems((tmp_path / log).read_text())
            if not any(expected in line for expected in EXPECTED_ERRORS)
        ]
        assert problems == [], log
    assert "level=error" not in prometheus.stderr(), prometheus.stderr()
