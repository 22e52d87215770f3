"""A real Prometheus scrapes the proxy, an ERE worker and the partner API: every panel has data,
every alert fires.

The set-up is a small production: the fake back-office (`testkit.fake_csms.FakeCsms`, in this
process), a proxy process with capture and the outbox on, its PostgreSQL (owned by the test, so
it can take it away), an `ere-proxy worker`, an `ere-proxy api` with its admin port, simulated
chargers (`bench.load.simulator`) and a partner calling the API a few times a second as load,
and Prometheus (the Debian package) with a 1 s scrape and evaluation interval, the scrape jobs of
`grafana/prometheus.yml` pointed at the test's ports and the rules of `grafana/alerts.yml` with
their `for:` durations shortened to 1 s.

Checked: the configuration and the rules pass `promtool`, and the promtool unit tests of the rules
on calendar deadlines (`grafana/tests/alerts_test.yml`, RevExportDeadline) and of the partner
API's (`grafana/tests/api_alerts_test.yml`: PartnerApiErrors, and WebhookDeliveriesStuck, which
takes a quarter of an hour) pass; the dashboards are valid Grafana JSON on the `$datasource`
variable; every panel query (variables on "All": `$instance` as `.*`) and every alert expression
parses; Prometheus loaded exactly the rules of the file, each with its summary, description,
runbook and runbook_url; under normal load no alert is pending or firing; every template
variable offers values and every panel query returns data at some point of the run (certificate
panels excepted: no TLS here; tests/e2e/test_prometheus_proxy_alerts.py shows them with data)
(outbox panels during the outage, worker panels after their jobs, and so on); and each fault makes
its alerts fire:

- a job that fails (a payout run of a quarter that was never closed): WorkerJobsFailing, EreJobsFailed;
- the back-office stopped (`FakeCsms.stop`) while chargers keep sending: UpstreamDown, OutboxGrowing;
  a charger that floods its outbox past its bound: OutboxFull; a CALL the back-office of another
  charger refuses on every replay: OutboxDeadLetters;
- a charger whose events the database refuses (a trigger the test adds): CaptureDeadLetters;
- the database crashed (SIGQUIT to the postmaster) while the spill directory is gone (replaced by
  a file, as when its volume is lost), with a small spill log: JournalSpilling,
  JournalDatabaseErrors, JournalLosingEvents, CaptureFailing; and the partner's requests fail
  (503): PartnerApiErrors;
- the worker, the api process and then the proxy stopped: EreWorkerDown, PartnerApiDown,
  ProxyDown.

Prometheus must be installed (`scripts/setup-debian`); without it the test fails, it never skips.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from proxy.ere.core.ean import check_digit
from proxy.routing.auth import hash_password
from testkit import websocket
from testkit.fake_csms import FakeCsms
from testkit.grafana import (
    ALERTS,
    CERTIFICATE_PANELS,
    GRAFANA,
    alert_rules,
    dashboard_problems,
    dashboards,
    panel_queries,
    provisioned_datasource_uid,
    resolve,
    variable_promql,
    variables,
)
from testkit.partner_api import call
from testkit.ports import free_port
from testkit.postgres import create_database, make_data_dir, sql, start_database
from testkit.prometheus import (
    ERE_FAULT_ALERTS,
    PROXY_FAULT_ALERTS,
    WAIT,
    Prometheus,
    api_config,
    cli,
    prometheus_config,
    promtool,
    require,
    start_api,
    start_worker,
    stop,
    worker_config,
)
from testkit.prometheus_faults import alerts_on_normal_load
from testkit.proxy_process import CONFIG, REPO, ProxyProcess, log_problems, metric, spawn_proxy

pytestmark = pytest.mark.slow

CHARGERS = 40
SPILL_MAX_BYTES = 32 * 1024  # small, so that the database outage fills it and events are lost
PASSWORD = "charger-password"
PASSWORD_HASH = hash_password(PASSWORD)
CHARGER_MAX_BYTES = 48 * 1024  # outbox bound per charger: the flood reaches it, the fleet does not
FLOOD_CALL_BYTES = 8 * 1024
# Alerts on calendar deadlines or a quarter of an hour's wait, tested by promtool on a clock of
# its own (ALERT_UNIT_TESTS); the service-level, capacity, certificate and freshness alerts have
# faults of their own in two sibling modules (PROXY_FAULT_ALERTS, ERE_FAULT_ALERTS).
UNIT_TESTED_ALERTS = {"RevExportDeadline", "WebhookDeliveriesStuck"}
ALERT_UNIT_TESTS = tuple(sorted((GRAFANA / "tests").glob("*_test.yml")))
ALERT_WAIT = 60.0  # bound on an alert reaching `firing` once its fault is there
EXPECTED_ERRORS = (
    "spill log full",
    "outbox entry dead-lettered",
    "database",
    "asyncpg",
    "event kept in the dead-letter table",
    "spill log cannot be written",
)


def grafana_queries() -> dict[tuple[str, str, int], str]:
    """(dashboard, panel title, target index) -> the query as Prometheus gets it from Grafana,
    every variable on "All" (`$instance` -> `.*`); and (dashboard, "$name", 0) -> a query with a
    sample per value a template variable offers (its `label_values`)."""
    queries = {}
    for name, dashboard in dashboards().items():
        for index, (title, expr) in enumerate(panel_queries(dashboard)):
            queries[name, title, index] = resolve(expr)
        for variable in variables(dashboard).values():
            if variable["type"] == "query":
                queries[name, f"${variable['name']}", 0] = variable_promql(variable)
    return queries


# -- the processes under test -----------------------------------------------------------------------


def start_proxy(
    directory: Path, data_dir: Path, dsn: str, upstream_port: int, refusing_port: int
) -> ProxyProcess:
    """The proxy with capture and the outbox on; DEAD-LETTER-1's back-office is `refusing_port`."""
    port, admin_port = free_port(), free_port()
    text = CONFIG.replace(
        "[capture]\nenabled = false\n",
        f"[capture]\nenabled = true\nspill_max_bytes = {SPILL_MAX_BYTES}\n",
    )
    text = text.replace(
        "[outbox]\nenabled = false\n",
        (
            "[outbox]\nenabled = true\nredial_min = 0.5\nredial_max = 1.0\nretry_attempts = 1\nretry_interval = 0.5\n"
            f"max_bytes_per_charger = {CHARGER_MAX_BYTES}\n"
        ),
    )
    # One charger of the fleet copied to a mirror that is down (nobody listens on its port): the
    # mirror panels' series exist, at 0 where nothing got through. Copies only (no `allow`): the
    # native engine forwards its link, as every other's, within the latency objective.
    text += (
        '\n[chargers."PROM00000"]\nupstream = "ws://127.0.0.1:{upstream_port}/ocpp"\n'
        f'[[chargers."PROM00000".mirrors]]\nurl = "ws://127.0.0.1:{free_port()}/mirror"\n'
        f'\n[chargers."DEAD-LETTER-1"]\nupstream = "ws://127.0.0.1:{refusing_port}/ocpp"\nauth = "managed"\n'
        f'password_hash = "{PASSWORD_HASH}"\n'
        f'\n[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir / "proxy"}"\n'
    )
    config = directory / "proxy.toml"
    config.write_text(text.format(port=port, admin_port=admin_port, upstream_port=upstream_port))
    return spawn_proxy(config, directory / "proxy.stderr", (port, admin_port, upstream_port))


def start_simulator(proxy: ProxyProcess, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "sim.json").open("wb") as out, (directory / "sim.stderr").open("wb") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.load.simulator",
                "--url",
                f"ws://127.0.0.1:{proxy.port}/ocpp",
                "--chargers",
                str(CHARGERS),
                "--protocol",
                "mixed",
                "--sessions",
                "0",
                "--samples",
                "3",
                "--interval",
                "1",
                "--heartbeat",
                "1",
                "--duration",
                "600",
                "--max-seconds",
                "900",
                "--call-timeout",
                "30",
                "--prefix",
                "PROM",
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


async def seed_quarter(dsn: str) -> None:
    """Three customers with a charger, an EAN and a mandate each, and signed sessions in 2026Q3."""
    eans = [body + str(check_digit(body)) for body in (f"87168712{n:09d}" for n in range(3))]
    await sql(
        dsn,
        (
            "INSERT INTO partners (partner_id, name, kind, payout_model)"
            " VALUES ('P1', 'Installer One', 'installer', 'direct')",
        ),
        (
            """
        INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban, email)
        SELECT 'C' || n, 'P1', 'Customer ' || n, 'Straat ' || n, '1234 AB', 'Utrecht', e, 'Stedin',
               'NL91ABNA0417164300', 'c' || n || '@example.nl'
        FROM unnest($1::text[]) WITH ORDINALITY AS t(e, n)""",
            eans,
        ),
        (
            """
        INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent)
        SELECT ean, 2026, customer_id, '2026-01-01', '2026-01-01', '2026-12-31', '{"by": "customer"}' FROM customers""",
        ),
        (
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
            " SELECT 'ERE-' || customer_id, customer_id, 11000, '2026-01-01T00:00+01:00' FROM customers",
        ),
        (
            """
        INSERT INTO sessions (identity, transaction_id, connector_id, started_at, stopped_at, meter_start_wh,
                              meter_stop_wh, status, meter_class)
        SELECT 'ERE-' || c.customer_id, c.customer_id || '-' || s, 1,
               timestamptz '2026-07-01 06:00+00' + s * interval '3 days',
               timestamptz '2026-07-01 09:00+00' + s * interval '3 days',
               1000000, 1000000 + 12000 + s * 100, 'completed', 'signed-verified'
        FROM customers c, generate_series(1, 4) AS s""",
        ),
    )


# -- chargers the test drives itself ----------------------------------------------------------------


_readings = itertools.count(1000)


def meter_values(readings: int) -> str:
    """A 1.6 MeterValues CALL with `readings` sampled values, each call with readings of its own
    (the outbox takes an identical MeterValues for a re-sent one)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sampled = [
        {"value": str(next(_readings)), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
        for _ in range(readings)
    ]
    payload = {"connectorId": 1, "meterValue": [{"timestamp": now, "sampledValue": sampled}]}
    return json.dumps([2, f"mv-{time.monotonic_ns()}", "MeterValues", payload])


class Closed(Exception):
    """The proxy closed the connection (`code`: its close code; None: without a close frame)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class RawCharger:
    """A charger speaking WebSocket with `testkit.websocket`, so the test controls every frame."""

    def __init__(self, stream: trio.SocketStream, pending: bytes) -> None:
        self.stream, self._pending = stream, pending
        self._reader = websocket.FrameReader(from_client=False)
        self._messages: deque[Any] = deque()

    async def send(self, text: str, *, mask: bool = True) -> None:
        await self.stream.send_all(websocket.encode_frame(websocket.TEXT, text.encode(), mask=mask))

    async def receive(self) -> list[Any]:
        """The next OCPP message; Closed when the proxy closes the connection."""
        with trio.fail_after(WAIT):
            while True:
                while not self._messages:
                    data = self._pending or await self.stream.receive_some(65536)
                    self._pending = b""
                    if not data:
                        raise Closed(None)
                    self._messages.extend(self._reader.feed(data))
                message = self._messages.popleft()
                if message.opcode == websocket.CLOSE:
                    raise Closed(int.from_bytes(bytes(message.data[:2]), "big"))
                if message.opcode == websocket.TEXT:
                    return json.loads(bytes(message.data))

    async def call(self, frame: str) -> list[Any]:
        await self.send(frame)
        return await self.receive()


@asynccontextmanager
async def raw_charger(proxy: ProxyProcess, identity: str) -> AsyncIterator[RawCharger]:
    """A charger with its password (what admits it while its back-office is down)."""
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    authorization = b"Basic " + base64.b64encode(f"{identity}:{PASSWORD}".encode())
    async with stream:
        with trio.fail_after(WAIT):
            _, pending = await websocket.client_handshake(
                stream, f"127.0.0.1:{proxy.port}", f"/ocpp/{identity}", ["ocpp1.6"], authorization
            )
        yield RawCharger(stream, pending)


async def introduce(proxy: ProxyProcess, dsn: str, identity: str) -> None:
    """The charger connects while its back-office is up, which accepts its credential: from then
    on that credential admits it while the back-office is down."""
    async with raw_charger(proxy, identity) as charger:
        assert (await charger.call(json.dumps([2, "hb", "Heartbeat", {}])))[0] == 3
    stored = ("SELECT count(*) FROM charger_verifiers WHERE identity = $1", identity)
    with trio.fail_after(WAIT):
        while (await sql(dsn, stored))[0][
            0
        ] == 0:  # the proxy stores it a moment after the handshake
            await trio.sleep(0.1)


async def break_the_protocol(proxy: ProxyProcess) -> None:
    """A charger that sends an unmasked frame (clients must mask): the proxy closes it with 1002."""
    async with raw_charger(proxy, "CODEC-1") as charger:
        await charger.send('[2,"1","Heartbeat",{}]', mask=False)
        with pytest.raises(Closed) as closed:
            await charger.receive()
    assert closed.value.code == 1002


async def flood_until_refused(proxy: ProxyProcess) -> int:
    """A charger whose back-office is down sends big MeterValues until its outbox is full."""
    sent = 0
    async with raw_charger(proxy, "FLOOD-1") as charger:
        try:
            while sent < 4 * CHARGER_MAX_BYTES // FLOOD_CALL_BYTES:
                answer = await charger.call(meter_values(FLOOD_CALL_BYTES // 80))
                assert answer[0] == 3, answer  # answered by the proxy itself
                sent += 1
        except Closed as closed:
            assert closed.code == 1001
            return sent
    raise AssertionError(
        f"the outbox took {sent} CALLs of {FLOOD_CALL_BYTES} bytes without a bound"
    )


async def drain_flood(proxy: ProxyProcess) -> None:
    """FLOOD-1 back while its back-office is up: its outbox replays."""
    async with raw_charger(proxy, "FLOOD-1") as charger:
        assert (await charger.call(meter_values(1)))[0] == 3
        await until(lambda: metric(proxy, "ere_proxy_outbox_entries") == 0, "every outbox replayed")


async def refusing_back_office(stream: trio.SocketStream) -> None:
    """A back-office that answers every CALL with a CALLERROR."""
    async with stream:
        accepted = await websocket.server_handshake(stream, "/ocpp/", ("ocpp1.6",))
        if accepted is None:
            return
        reader, data = websocket.FrameReader(from_client=True), accepted[2]
        try:
            while data or (data := await stream.receive_some(65536)):
                for message in reader.feed(data):
                    if message.opcode == websocket.CLOSE:
                        return
                    frame = (
                        json.loads(bytes(message.data))
                        if message.opcode == websocket.TEXT
                        else None
                    )
                    if frame and frame[0] == 2:
                        refusal = json.dumps([4, frame[1], "InternalError", "refused", {}]).encode()
                        await stream.send_all(
                            websocket.encode_frame(websocket.TEXT, refusal, mask=False)
                        )
                data = b""
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


REFUSE_POISON = (
    """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.identity LIKE 'POISON-%' THEN
        RAISE EXCEPTION 'refused by policy: %', NEW.identity;
    END IF;
    RETURN NEW;
END
$$""",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON charger_events FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
)


async def refused_events(proxy: ProxyProcess, dsn: str) -> None:
    """A charger whose events the database refuses (a trigger): they become dead letters."""
    await sql(dsn, *((statement,) for statement in REFUSE_POISON))
    async with raw_charger(proxy, "POISON-1") as charger:
        status = {"connectorId": 1, "status": "Available", "errorCode": "NoError"}
        assert (await charger.call(json.dumps([2, "p1", "StatusNotification", status])))[0] == 3
    await until(lambda: metric(proxy, "ere_proxy_capture_dead_letters_total") >= 1, "a dead letter")
    await sql(
        dsn, ("DROP TRIGGER refuse_poison ON charger_events",), ("DROP FUNCTION refuse_poison",)
    )


async def dead_letter_charger(proxy: ProxyProcess, queued: trio.Event, done: trio.Event) -> None:
    """DEAD-LETTER-1 sends a CALL while its back-office is down, then stays until `done`."""
    async with raw_charger(proxy, "DEAD-LETTER-1") as charger:
        assert (await charger.call(meter_values(1)))[0] == 3
        queued.set()
        await done.wait()
        await charger.stream.send_all(websocket.close_frame(1000, mask=True))


# -- waiting ------------------------------------------------------------------------------------------


async def until(check: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    """Poll a condition other processes bring about (in a thread: the checks block), bounded."""
    deadline = trio.current_time() + limit
    while not await trio.to_thread.run_sync(check):
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await trio.sleep(0.25)


async def partner_traffic(port: int, key: str, answered: Counter[int]) -> None:
    """A partner's integration, until cancelled: five requests a second, mostly reads with its key,
    some of a customer it does not have and a few without the key (fewer than the failed
    authentications an address may make); `answered` counts the statuses (0: no answer)."""
    unknown = "/v1/customers/cus_00000000000000000000"
    for turn in itertools.count():
        credential: str | None
        path, credential = (unknown, key) if turn % 4 == 1 else ("/v1/customers", key)
        if turn % 8 == 3:
            credential = None
        try:
            with trio.fail_after(WAIT):
                reply = await call(port, "GET", path, key=credential)
            answered[reply.status] += 1
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):  # the api process stopped
            answered[0] += 1
        await trio.sleep(0.2)


async def firing(prometheus: Prometheus, fired: set[str], *names: str) -> None:
    """Wait until each alert is firing; `fired` collects the names."""
    for name in names:

        def is_firing(name: str = name) -> bool:
            return prometheus.alert_states().get(name) == "firing"

        await until(is_firing, f"alert {name} firing", ALERT_WAIT)
        fired.add(name)


async def watch_panels(
    prometheus: Prometheus,
    queries: dict[Any, str],
    seen: set[Any],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every panel query that has not returned data yet, once a second, until cancelled."""
    task_status.started()
    while len(seen) < len(queries):
        for key, expr in queries.items():
            if key not in seen and await trio.to_thread.run_sync(prometheus.has_data, expr):
                seen.add(key)
        await trio.sleep(1)


# -- the test -----------------------------------------------------------------------------------------


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-prometheus-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_dashboards_are_valid_and_the_configuration_passes_promtool(tmp_path):
    require("prometheus")
    uid = provisioned_datasource_uid()
    boards = dashboards()
    assert len({board["uid"] for board in boards.values()}) == len(boards) == 3
    for name, board in boards.items():
        assert dashboard_problems(board, uid) == [], name
    assert "SUCCESS" in promtool("check", "config", str(GRAFANA / "prometheus.yml"))
    assert f"SUCCESS: {len(alert_rules())} rules found" in promtool("check", "rules", str(ALERTS))
    tested = promtool("test", "rules", *map(str, ALERT_UNIT_TESTS))
    assert tested.count("SUCCESS") == len(ALERT_UNIT_TESTS), tested
    assert "SUCCESS" in promtool(
        "check", "config", str(prometheus_config(tmp_path, free_port(), free_port(), free_port()))
    )


async def test_prometheus_scrapes_every_panel_and_every_fault_fires_its_alerts(tmp_path, data_dir):
    binary = require("prometheus")
    require("promtool")
    queries = grafana_queries()
    certificate_panels = {key for key in queries if key[1] in CERTIFICATE_PANELS}
    assert len(certificate_panels) == len(CERTIFICATE_PANELS)
    rules = alert_rules()
    database = await trio.to_thread.run_sync(start_database, data_dir)
    dsn = await trio.to_thread.run_sync(create_database, database)
    csms = FakeCsms(port=free_port(), record=False)
    refusing_port, worker_admin = free_port(), free_port()
    api_port, api_admin = free_port(), free_port()
    proxy = worker = api = simulator = prometheus = None
    answered: Counter[int] = Counter()
    seen: set[Any] = set()
    fired: set[str] = set()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.serve)
            proxy = await trio.to_thread.run_sync(
                start_proxy, tmp_path, data_dir, dsn, csms.port, refusing_port
            )
            await seed_quarter(dsn)  # the proxy has migrated the database
            config = worker_config(tmp_path, dsn, worker_admin)
            worker = start_worker(config, tmp_path)
            partner_config = api_config(tmp_path, dsn, api_port, api_admin)
            api = start_api(partner_config, tmp_path)
            prometheus = Prometheus(
                binary,
                prometheus_config(tmp_path, proxy.admin_port, worker_admin, api_admin),
                tmp_path,
            )
            await until(prometheus.ready, "Prometheus to be ready")
            await until(
                lambda: prometheus.has_data(
                    'min(up{job="ere-worker"}) * min(up{job="ere-proxy"})'
                    ' * min(up{job="ere-api"}) == 1'
                ),
                "every target scraped",
            )
            created = await trio.to_thread.run_sync(
                lambda: cli(
                    partner_config, "partners", "keys", "create", "P1", "--scopes", "customers:read"
                )
            )
            assert created.returncode == 0, created.stderr
            nursery.start_soon(partner_traffic, api_port, created.stdout.strip(), answered)

            # Every query parses; Prometheus loaded exactly the rules of the file, and each explains itself.
            for expr in [*queries.values(), *(rule.expr for rule in rules)]:
                answer = await trio.to_thread.run_sync(prometheus.query, expr)
                assert answer["status"] == "success", (expr, answer)
            loaded = await trio.to_thread.run_sync(prometheus.rules)
            assert sorted(rule["name"] for rule in loaded) == sorted(rule.name for rule in rules)
            for rule in loaded:
                assert {"summary", "description", "runbook", "runbook_url"} <= set(
                    rule["annotations"]
                ), rule["name"]
            # parsed above; no TLS in this run (test_prometheus_proxy_alerts.py has their data)
            seen.update(certificate_panels)
            await nursery.start(watch_panels, prometheus, queries, seen)

            # Normal operation: chargers, a protocol error, a quarter closed by the worker.
            simulator = start_simulator(proxy, tmp_path)
            await until(
                lambda: metric(proxy, "ere_proxy_connected_chargers") == CHARGERS, "the fleet"
            )
            await break_the_protocol(proxy)
            closing = await trio.to_thread.run_sync(
                lambda: cli(config, "quarter", "close", "2026Q3", "--wait")
            )
            assert closing.returncode == 0, closing.stdout + closing.stderr
            await until(
                lambda: prometheus.has_data("sum(ere_worker_pipeline_eligible_energy_joules) > 0"),
                "the closed quarter's energy",
            )
            await until(
                lambda: all(r["health"] == "ok" for r in prometheus.rules()), "every rule evaluated"
            )
            # Nothing is wrong yet (but the latency ticket; see alerts_on_normal_load).
            assert await alerts_on_normal_load(prometheus) == []

            # A job that fails every attempt: a payout run of a quarter that was never closed.
            [(job_id,)] = await sql(
                dsn,
                (
                    "INSERT INTO ere_jobs (kind, job_key, args) VALUES ('payout', '2026Q2', $1) RETURNING job_id",
                    json.dumps(
                        {
                            "quarter": "2026Q2",
                            "execution_date": "2026-07-01",
                            "created_at": "2026-07-01T09:00:00+00:00",
                        }
                    ),
                ),
            )
            await firing(prometheus, fired, "WorkerJobsFailing", "EreJobsFailed")
            # What the runbook says: requeue it (it fails again, the quarter is still not closed).
            requeued = await trio.to_thread.run_sync(
                lambda: cli(config, "jobs", "requeue", str(job_id))
            )
            assert requeued.returncode == 0, requeued.stdout + requeued.stderr
            failed_twice = 'sum(ere_worker_job_runs_total{kind="payout", outcome="failed"}) == 2'
            await until(lambda: prometheus.has_data(failed_twice), "the requeued job to fail again")

            # The back-office goes down while chargers keep sending; one charger floods its outbox;
            # DEAD-LETTER-1's own back-office is down too, and refuses its CALL once it is back.
            queued, done = trio.Event(), trio.Event()
            await introduce(proxy, dsn, "FLOOD-1")
            nursery.start_soon(dead_letter_charger, proxy, queued, done)
            await csms.stop()
            await until(
                lambda: metric(proxy, "ere_proxy_links_offline") == CHARGERS + 1,
                "every link offline",
            )
            assert await flood_until_refused(proxy) > 0
            await firing(prometheus, fired, "UpstreamDown", "OutboxGrowing", "OutboxFull")
            await queued.wait()
            await nursery.start(
                partial(trio.serve_tcp, refusing_back_office, refusing_port, host="127.0.0.1")
            )
            await firing(prometheus, fired, "OutboxDeadLetters")
            await csms.start()
            await until(lambda: metric(proxy, "ere_proxy_links_offline") == 0, "every link back")
            done.set()
            await drain_flood(proxy)

            # Events the database refuses on their own are kept as dead letters.
            await refused_events(proxy, dsn)
            await firing(prometheus, fired, "CaptureDeadLetters")

            # The database goes away, and so does the spill directory (a file in its place): the
            # journal cannot write its spill log, keeps what fits its small bound and loses the rest.
            await until(
                lambda: metric(proxy, "ere_proxy_journal_spill_bytes") == 0, "no spill segment open"
            )
            spill_dir = data_dir / "proxy" / "spill" / "worker-0"
            aside = spill_dir.with_name("worker-0.aside")
            spill_dir.rename(aside)
            spill_dir.write_text("not a directory")
            crashed, database = database, None
            await trio.to_thread.run_sync(crashed.crash)
            await firing(
                prometheus,
                fired,
                "JournalSpilling",
                "JournalDatabaseErrors",
                "JournalLosingEvents",
                "CaptureFailing",
                "PartnerApiErrors",
            )
            assert answered[503] > 0, answered
            spill_dir.unlink()
            aside.rename(spill_dir)
            await until(
                lambda: metric(proxy, "ere_proxy_journal_spill_failing") == 0,
                "the spill log written again",
            )
            database = await trio.to_thread.run_sync(start_database, data_dir)
            await until(
                lambda: metric(proxy, "ere_proxy_journal_spilling") == 0, "the journal to catch up"
            )

            # Every panel had data at some point.
            await until(
                lambda: len(seen) == len(queries),
                "data for every panel: missing " + repr(sorted(set(queries) - seen)),
                30,
            )

            # Scrape targets go away.
            simulator.kill()
            await trio.to_thread.run_sync(simulator.wait)
            assert await trio.to_thread.run_sync(stop, worker) == 0
            await firing(prometheus, fired, "EreWorkerDown")
            assert await trio.to_thread.run_sync(stop, api) == 0
            await firing(prometheus, fired, "PartnerApiDown")
            assert await trio.to_thread.run_sync(proxy.terminate) == 0
            await firing(prometheus, fired, "ProxyDown")
            nursery.cancel_scope.cancel()
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        await trio.to_thread.run_sync(stop, worker)
        await trio.to_thread.run_sync(stop, api)
        if proxy is not None:
            await trio.to_thread.run_sync(proxy.terminate)
        if prometheus is not None:
            await trio.to_thread.run_sync(prometheus.stop)
        if database is not None:
            await trio.to_thread.run_sync(database.close)

    # every rule of the file has its fault here, in a sibling module, or in the promtool unit
    # tests (deadlines, the webhook backlog's age)
    elsewhere = UNIT_TESTED_ALERTS | PROXY_FAULT_ALERTS | ERE_FAULT_ALERTS
    assert fired == {rule.name for rule in rules} - elsewhere
    for log in ("proxy.stderr", "worker.stderr", "api.stderr"):
        problems = [
            line
            for line in log_problems((tmp_path / log).read_text())
            if not any(expected in line for expected in EXPECTED_ERRORS)
        ]
        assert problems == [], log
    assert "level=error" not in prometheus.stderr(), prometheus.stderr()
