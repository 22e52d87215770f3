"""The alert and recording rules pass `promtool`, and their unit tests pass: each alert fires when
its condition holds (and for as long as it holds) and stays quiet under normal load.

The unit tests are grafana/tests/*_test.yml; this runs them all, so a rule changed without its
test (or a test that no longer matches its rule) fails here, not only in the end-to-end run.
The example Alertmanager configuration (grafana/alertmanager.yml) passes `amtool check-config`,
routes every critical alert to the page receiver and every warning to the ticket one, and a real
Alertmanager given a cause and its symptoms silences exactly the symptoms.

promtool, amtool and Alertmanager must be installed (`scripts/setup-debian`: the Debian packages
prometheus and prometheus-alertmanager); without them the tests fail, they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.grafana import GRAFANA, alert_rules, dashboards, panel_queries, resolve
from testkit.ports import free_port

ALERTMANAGER = GRAFANA / "alertmanager.yml"
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run scripts/setup-debian")
    return subprocess.run(
        [binary, *args], cwd=GRAFANA, capture_output=True, text=True, timeout=120, check=False
    )


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(name)
    if binary is None:
        pytest.fail(f"{name} not found: run scripts/setup-debian")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_the_rules_are_valid():
    checked = promtool("check", "rules", "recording.yml", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("path", sorted(p.name for p in (GRAFANA / "tests").glob("*_test.yml")))
def test_the_promtool_unit_tests_pass(path):
    tested = promtool("test", "rules", f"tests/{path}")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def runbook_sections() -> dict[str, str]:
    """RUNBOOK.md's sections by their heading."""
    text = (GRAFANA / "RUNBOOK.md").read_text()
    return {part.split("\n", 1)[0]: part for part in re.split(r"^## ", text, flags=re.M)[1:]}


def runbook_gaps(sections: dict[str, str], names: set[str]) -> dict[str, list[str]]:
    """Alert -> the parts its runbook section lacks (all of them when there is no section)."""
    parts = ("**Meaning.**", "**Check", "Act.**", "**Urgency.**", "**Verify.**", "**Escalate.**")
    return {
        name: missing
        for name in sorted(names)
        if (missing := [part for part in parts if part not in sections.get(name, "")])
    }


def test_every_alert_has_a_runbook_with_urgency_verification_and_escalation():
    sections = runbook_sections()
    assert runbook_gaps(sections, {rule.name for rule in alert_rules()}) == {}
    # and the check sees a section that lacks one
    cut = {**sections, "UpstreamDown": sections["UpstreamDown"].replace("**Escalate.**", "")}
    assert runbook_gaps(cut, {"UpstreamDown", "Nameless"}) == {
        "UpstreamDown": ["**Escalate.**"],
        "Nameless": [
            "**Meaning.**",
            "**Check",
            "Act.**",
            "**Urgency.**",
            "**Verify.**",
            "**Escalate.**",
        ],
    }


def test_a_broken_threshold_fails_its_unit_test(tmp_path):
    """The unit tests catch a rule that fires too early (a drop alert at 5 % instead of 25 %)."""
    rules = (GRAFANA / "alerts.yml").read_text()
    assert "< 0.75 * max_over_time" in rules
    (tmp_path / "alerts.yml").write_text(
        rules.replace("< 0.75 * max_over_time", "< 0.95 * max_over_time")
    )
    shutil.copy(GRAFANA / "recording.yml", tmp_path / "recording.yml")
    (tmp_path / "tests").mkdir()
    shutil.copy(GRAFANA / "tests" / "proxy_alerts_test.yml", tmp_path / "tests")
    binary = shutil.which("promtool")
    assert binary is not None
    tested = subprocess.run(
        [binary, "test", "rules", "tests/proxy_alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tested.returncode != 0 and "ChargersDisconnected" in tested.stdout + tested.stderr


def test_the_certificate_panels_show_days_left(tmp_path):
    """The certificate panels (no data without TLS, as in the end-to-end run) on promtool's
    clock: both certificates expire 20 days in; 6 days later the panels show 14 days left."""
    panels = {
        title: resolve(expr)
        for title, expr in panel_queries(dashboards()["proxy-overview.json"])
        if "certificate_expiry" in expr
    }
    expected = {
        "Listener certificate: days left": '{instance="p0", certificate="listener"}',
        "Back-office certificates: days left": '{upstream="a.example:443"}',
    }
    assert set(panels) == set(expected)
    test: dict[str, Any] = {  # JSON is YAML
        "rule_files": [str(GRAFANA / "recording.yml")],
        "evaluation_interval": "1h",
        "tests": [
            {
                "interval": "1h",
                "input_series": [
                    {
                        "series": 'ere_proxy_certificate_expiry_timestamp_seconds{job="ere-proxy",'
                        ' instance="p0", certificate="listener"}',
                        "values": "1728000x200",
                    },
                    {
                        "series": "ere_proxy_upstream_certificate_expiry_timestamp_seconds"
                        '{job="ere-proxy", instance="p0", upstream="a.example:443"}',
                        "values": "1728000x200",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": panels[title],
                        "eval_time": "6d",
                        "exp_samples": [{"labels": labels, "value": 14}],
                    }
                    for title, labels in expected.items()
                ],
            }
        ],
    }
    path = tmp_path / "panels_test.yml"
    path.write_text(json.dumps(test))
    tested = promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    test["tests"][0]["promql_expr_test"][0]["exp_samples"][0]["value"] = 13
    path.write_text(json.dumps(test))
    assert promtool("test", "rules", str(path)).returncode != 0


def test_the_alertmanager_example_is_valid_and_a_broken_one_is_not(tmp_path):
    checked = tool("amtool", "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 receivers" in checked.stdout and "5 inhibit rules" in checked.stdout
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(ALERTMANAGER.read_text().replace("receiver: page", "receiver: pager", 1))
    assert tool("amtool", "check-config", str(broken)).returncode != 0


def test_every_critical_alert_pages_and_every_warning_opens_a_ticket():
    receivers = {"critical": "page", "warning": "ticket"}
    for rule in alert_rules():
        found = re.search(r"severity:\s*(\w+)", rule.text)
        assert found is not None and found[1] in receivers, rule.name
        routed = tool(
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={rule.name}",
            f"severity={found[1]}",
        )
        assert routed.stdout.split() == [receivers[found[1]]], (rule.name, routed.stdout)


class Alertmanager:
    """An Alertmanager on a free loopback port with grafana/alertmanager.yml, no cluster."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            pytest.fail("prometheus-alertmanager not found: run scripts/setup-debian")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={ALERTMANAGER}",
                f"--storage.path={directory}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def call(self, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with _http.open(request, timeout=5) as response:
            text = response.read()
        return json.loads(text) if text else None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                with _http.open(self.url + "/-/ready", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:  # urllib.error.URLError included: not listening yet
                time.sleep(0.1)
        raise AssertionError("Alertmanager not ready within 30 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    manager = Alertmanager(tmp_path)
    try:
        manager.wait_ready()
        yield manager
    finally:
        manager.stop()


def test_a_cause_silences_its_symptoms_and_nothing_else(alertmanager):
    """Alerts as Prometheus sends them: the inhibited ones are exactly the symptoms."""
    fired = {
        # cause: a back-office down; its certificate warning and the outbox growth are symptoms,
        # another back-office's certificate warning is not
        "down": {"alertname": "UpstreamDown", "severity": "critical", "upstream": "a:443"},
        "cert-a": {
            "alertname": "UpstreamCertificateExpiresSoon",
            "severity": "warning",
            "upstream": "a:443",
        },
        "cert-b": {
            "alertname": "UpstreamCertificateExpiresSoon",
            "severity": "warning",
            "upstream": "b:443",
        },
        "growing": {"alertname": "OutboxGrowing", "severity": "warning"},
        # cause: a worker gone; its spill-log warning is a symptom, another worker's is not
        "proxy-down": {
            "alertname": "ProxyDown",
            "severity": "critical",
            "job": "ere-proxy",
            "instance": "p0",
        },
        "spill-p0": {
            "alertname": "SpillLogNearlyFull",
            "severity": "warning",
            "job": "ere-proxy",
            "instance": "p0",
        },
        "spill-p1": {
            "alertname": "SpillLogNearlyFull",
            "severity": "warning",
            "job": "ere-proxy",
            "instance": "p1",
        },
        # cause: a mass disconnect; the ticket-level forwarding burn follows, its page does not
        "disconnected": {"alertname": "ChargersDisconnected", "severity": "critical"},
        "burn-ticket": {"alertname": "ForwardingErrorBudgetBurn", "severity": "warning"},
        "burn-page": {"alertname": "ForwardingErrorBudgetBurn", "severity": "critical"},
        # the critical alert of a name silences its own warning, not another worker's
        "fds-critical": {
            "alertname": "ProxyFileDescriptorsHigh",
            "severity": "critical",
            "job": "ere-proxy",
            "instance": "p2",
        },
        "fds-warning": {
            "alertname": "ProxyFileDescriptorsHigh",
            "severity": "warning",
            "job": "ere-proxy",
            "instance": "p2",
        },
        "fds-other": {
            "alertname": "ProxyFileDescriptorsHigh",
            "severity": "warning",
            "job": "ere-proxy",
            "instance": "p3",
        },
    }
    names = {rule.name for rule in alert_rules()}
    assert {labels["alertname"] for labels in fired.values()} <= names
    alertmanager.call("/api/v2/alerts", [{"labels": labels} for labels in fired.values()])
    keys = {json.dumps(labels, sort_keys=True): key for key, labels in fired.items()}
    symptoms = {"cert-a", "growing", "spill-p0", "burn-ticket", "fds-warning"}

    def inhibited() -> set[str]:
        listed = alertmanager.call("/api/v2/alerts")
        assert isinstance(listed, list) and len(listed) == len(fired)
        return {
            keys[json.dumps(alert["labels"], sort_keys=True)]
            for alert in listed
            if alert["status"]["inhibitedBy"]
        }

    # The inhibitor learns of the causes from its own subscription, a moment after the API took
    # them; the inhibited set only grows while it catches up (a proper subset of the symptoms).
    deadline = time.monotonic() + 30
    seen = inhibited()
    while seen < symptoms and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = inhibited()
    assert seen == symptoms
