"""A real Prometheus (the Debian package) for end-to-end tests, and the ERE worker and partner API
processes it scrapes beside the proxy.

`Prometheus` runs on a free loopback port with the repository's scrape jobs pointed at the test's
ports, 1 s scrape and evaluation intervals and the rules of `grafana/alerts.yml` with every `for:`
shortened to 1 s (`prometheus_config`). Without prometheus or promtool on PATH the tests fail,
they never skip (`require`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testkit.grafana import ALERTS, GRAFANA
from testkit.ports import free_port
from testkit.proxy_process import REPO

INSTALL = (
    "prometheus and promtool must be on PATH for this test: run scripts/setup-debian "
    "(apt-get install --no-install-recommends prometheus)"
)
WAIT = 90.0  # bound on any one thing another process brings about
# The alerts each end-to-end module provokes and sees firing on a real Prometheus; together with
# tests/e2e/test_prometheus.py's own faults and the promtool-only ones, every rule of alerts.yml.
PROXY_FAULT_ALERTS = frozenset(  # tests/e2e/test_prometheus_proxy_alerts.py
    {
        "HandshakeErrorBudgetBurn",
        "CertificateExpiresSoon",
        "UpstreamCertificateExpiresSoon",
        "ProxyChargerCapacityHigh",
        "ProxyFileDescriptorsHigh",
        "ProxyAcceptErrors",
        "ChargersDisconnected",
        "OutboxNearlyFull",
        "OutboxFillsSoon",
        "ForwardingErrorBudgetBurn",
    }
)
ERE_FAULT_ALERTS = frozenset(  # tests/e2e/test_prometheus_ere_alerts.py
    {
        "ForwardingLatencyBudgetBurn",
        "CaptureUnparseablePayloads",
        "ErePipelineStale",
        "EreWorkerDatabaseErrors",
        "ErePipelineFreshnessBudgetBurn",
        "EreJobsWaiting",
        "SpillLogNearlyFull",
        "SpillLogFillsSoon",
        "CaptureErrorBudgetBurn",
        "EreJobRunningLong",
    }
)

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found. {INSTALL}")
    return path


# -- Prometheus -------------------------------------------------------------------------------------


class Prometheus:
    """A Prometheus process on a free loopback port, and the parts of its HTTP API the test uses."""

    def __init__(self, binary: str, config: Path, directory: Path) -> None:
        self.port = free_port()
        self.stderr_path = directory / "prometheus.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def get(self, path: str, **params: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with _http.open(url, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            with error:
                body, status = error.read(), error.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {self.process.returncode}:\n{self.stderr()}"
            )
        try:
            return self.get("/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query: {"status": "success", "data": ...} or an error."""
        return self.get("/api/v1/query", query=expr)[1]

    def has_data(self, expr: str) -> bool:
        """True when the query returns at least one sample that is a number (not NaN)."""
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return any(not math.isnan(float(sample["value"][1])) for sample in answer["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")[1]["data"]["alerts"]

    def alert_states(self) -> dict[str, str]:
        """Alert name -> its most advanced state (firing over pending)."""
        states: dict[str, str] = {}
        for alert in self.alerts():
            name = alert["labels"]["alertname"]
            if states.get(name) != "firing":
                states[name] = alert["state"]
        return states

    def rules(self) -> list[dict[str, Any]]:
        groups = self.get("/api/v1/rules", type="alert")[1]["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts_evaluated_since(self, wall_time: float) -> bool:
        """Every alerting rule has been evaluated after `wall_time` (seconds since the epoch)."""
        return all(_epoch_seconds(rule["lastEvaluation"]) > wall_time for rule in self.rules())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def prometheus_config(directory: Path, proxy_admin: int, worker_admin: int, api_admin: int) -> Path:
    """The repo's scrape jobs on the test's ports, 1 s intervals, the repo's alerts with `for: 1s`."""
    jobs = re.findall(r"job_name:\s*(\S+)", (GRAFANA / "prometheus.yml").read_text())
    assert sorted(jobs) == ["ere-api", "ere-proxy", "ere-worker"], jobs
    targets = {"ere-proxy": proxy_admin, "ere-worker": worker_admin, "ere-api": api_admin}
    rules = directory / "alerts.yml"
    rules.write_text(
        re.sub(r"^(\s+)for:\s*\S+\s*$", r"\g<1>for: 1s", ALERTS.read_text(), flags=re.M)
    )
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(GRAFANA / "recording.yml"), str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{targets[job]}"]}]}
            for job in jobs
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def promtool(*args: str) -> str:
    result = subprocess.run(
        [require("promtool"), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,  # the rules' unit tests take a minute on a busy two-core machine
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def worker_config(directory: Path, dsn: str, admin_port: int) -> Path:
    config = directory / "worker.toml"
    config.write_text(f"""\
[log]
level = "info"

[database]
dsn = "{dsn}"

[ere]
admin_port = {admin_port}
poll_interval = 0.2
pipeline_refresh = 1.0
max_attempts = 1
close_shards = 2
payout_dir = "{directory / "payouts"}"
statement_dir = "{directory / "statements"}"
""")
    return config


def start_worker(
    config: Path, directory: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`ere-proxy worker` (worker 0); `env`: its environment, if not this process's."""
    with (directory / "worker.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "worker", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def api_config(directory: Path, dsn: str, port: int, admin_port: int) -> Path:
    config = directory / "api.toml"
    config.write_text(f"""\
[log]
level = "info"

[database]
dsn = "{dsn}"
connect_timeout = 2.0
query_timeout = 5.0

[api]
enabled = true
port = {port}
admin_port = {admin_port}
webhook_scan_interval = 1.0
""")
    return config


def start_api(config: Path, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "api.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "api", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop(process: subprocess.Popen[bytes] | None) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ere-proxy ARGS --config CONFIG`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(config)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def _epoch_seconds(stamp: str) -> float:
    """Prometheus's RFC 3339 time (nanoseconds, "Z") as seconds since the epoch."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")
