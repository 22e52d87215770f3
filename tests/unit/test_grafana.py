"""The dashboards and alert rules: valid structure, and they only query series the processes export
(their readers are in `testkit.grafana`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from proxy.api.metrics import ApiMetrics
from proxy.api.throttle import Throttle
from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.ere.jobs.worker import WorkerMetrics
from proxy.outbox.entries import Budget
from proxy.runtime.config import ApiSettings
from proxy.runtime.metrics import JournalCollector, OutboxCollector, ProxyMetrics
from testkit.grafana import (
    GRAFANA,
    alert_rules,
    dashboard_problems,
    dashboards,
    panel_queries,
    provisioned_datasource_uid,
)

DASHBOARD_UIDS = {"ere-proxy-overview", "ere-proxy-reliability", "ere-pipeline"}
SERIES = re.compile(r"\b(ere_[a-z0-9_]+)")
PROMETHEUS_SERIES = {"up"}  # Prometheus's own, per scrape target
RECORDED = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")  # level:metric:operation


def recorded_series() -> dict[str, str]:
    """Name -> expression of every recording rule of grafana/recording.yml (read as the alert
    rules are: one `- record:` item per rule)."""
    text = (GRAFANA / "recording.yml").read_text().replace("- record:", "- alert:")
    return {rule.name: rule.expr for rule in alert_rules(text)}


def raw_series(expr: str) -> set[str]:
    """The exported series an expression names (recorded ones taken out first)."""
    return set(SERIES.findall(RECORDED.sub("", expr)))


class _NoRows:
    """A database with empty tables, so the worker's pipeline families exist (without samples)."""

    async def fetch(self, query: str, *args: Any) -> list[tuple]:
        return []


async def exported_series(tmp_path: Path) -> set[str]:
    """Names of every series the proxy, ERE worker and partner API processes can export."""
    registry = ProxyMetrics().registry
    spill = SpillLog(tmp_path / "spill")
    try:
        registry.register(JournalCollector(Journal(spill), spill_max_bytes=10))
        registry.register(OutboxCollector(Budget(10, 10), list))
        worker = WorkerMetrics(CollectorRegistry(), pipeline=True)
        await worker.refresh(_NoRows())
        api = ApiMetrics()
        api.watch_throttle(Throttle(ApiSettings()))
        families = [*registry.collect(), *worker.registry.collect(), *api.registry.collect()]
    finally:
        spill.close()
    names: set[str] = set()
    for family in families:
        suffixes = {
            "counter": ["_total"],
            "gauge": [""],
            "histogram": ["_bucket", "_sum", "_count"],
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_three_dashboards_are_there_with_their_uids():
    assert {d["uid"] for d in dashboards().values()} == DASHBOARD_UIDS
    assert set(dashboards()) == {"proxy-overview.json", "reliability.json", "ere-pipeline.json"}


def test_dashboards_are_valid_and_use_the_provisioned_datasource():
    uid = provisioned_datasource_uid()
    for name, dashboard in dashboards().items():
        assert dashboard_problems(dashboard, uid) == [], name


def test_the_structure_check_finds_what_breaks_a_dashboard():
    good = next(iter(dashboards().values()))
    uid = provisioned_datasource_uid()
    broken = json.loads(json.dumps(good))
    broken["panels"][1]["id"] = broken["panels"][0]["id"]
    broken["panels"][0]["gridPos"]["w"] = 30
    broken["panels"][0]["targets"][0].pop("refId")
    broken["panels"][2]["datasource"] = {"type": "prometheus", "uid": "another"}
    broken["panels"][3]["targets"][0]["expr"] = "rate(ere_proxy_frames_total[1m])"
    problems = "\n".join(dashboard_problems(broken, uid))
    for expected in (
        "ids not unique",
        "outside the 24 columns",
        "refIds",
        "datasource",
        "aggregate",
        "overlaps",
    ):
        assert expected in problems


async def test_every_dashboard_query_names_an_exported_series(tmp_path):
    exported = await exported_series(tmp_path)
    for name, dashboard in dashboards().items():
        queries = [expr for _, expr in panel_queries(dashboard)]
        used = {series for expr in queries for series in raw_series(expr)}
        assert used and used <= exported, (name, used - exported)
        recorded = {found for expr in queries for found in RECORDED.findall(expr)}
        assert recorded <= set(recorded_series()), (name, recorded - set(recorded_series()))


async def test_every_recording_rule_names_exported_or_recorded_series(tmp_path):
    exported = await exported_series(tmp_path)
    rules = recorded_series()
    for name, expr in rules.items():
        assert raw_series(expr) <= exported, (name, raw_series(expr) - exported)
        assert set(RECORDED.findall(expr)) <= set(rules), name


async def test_every_alert_names_an_exported_series_and_explains_itself(tmp_path):
    exported = await exported_series(tmp_path)
    rules = alert_rules()
    names = [rule.name for rule in rules]
    # One alert per name and severity: a deadline may warn first and page later under one name.
    severities = [re.search(r"severity:\s*(\w+)", rule.text) for rule in rules]
    keyed = [(rule.name, found[1] if found else "") for rule, found in zip(rules, severities)]
    assert all(severities) and len(keyed) == len(set(keyed)), keyed
    assert {"UpstreamDown", "OutboxGrowing", "JournalSpilling", "WorkerJobsFailing"} <= set(names)
    assert {"PartnerApiDown", "PartnerApiErrors", "WebhookDeliveriesStuck"} <= set(names)
    recorded = set(recorded_series())
    for rule in rules:
        used = raw_series(rule.expr)
        others = set(re.findall(r"\b([a-z_]+)\{", rule.expr)) - used
        named = set(RECORDED.findall(rule.expr))
        assert (used or others or named) and used <= exported, (rule.name, rule.expr)
        assert others <= PROMETHEUS_SERIES | exported and named <= recorded, (rule.name, rule.expr)
        assert {"summary", "description", "runbook"} <= rule.annotations, rule.name
        assert f"RUNBOOK.md#{rule.name.lower()}" in rule.text, rule.name
    runbook = (GRAFANA / "RUNBOOK.md").read_text()
    for name in names:
        assert f"\n## {name}\n" in runbook, name


def test_the_alert_reader_reads_inline_and_block_expressions():
    text = """groups:
  - name: g
    rules:
      - alert: One
        expr: sum(a) > 0
        annotations:
          summary: s
      - alert: Two
        expr: >-
          sum(b)
          - sum(c) > 0
        for: 5m
        annotations:
          summary: s
          runbook: r
"""
    assert [(r.name, r.expr, r.annotations) for r in alert_rules(text)] == [
        ("One", "sum(a) > 0", {"summary"}),
        ("Two", "sum(b)\n- sum(c) > 0", {"summary", "runbook"}),
    ]


def test_prometheus_scrapes_the_proxy_the_worker_and_the_api_and_loads_the_alerts():
    text = (GRAFANA / "prometheus.yml").read_text()
    assert set(re.findall(r"job_name:\s*(\S+)", text)) == {"ere-proxy", "ere-worker", "ere-api"}
    assert re.search(r"rule_files:\s*\n\s*- recording\.yml\s*\n\s*- alerts\.yml", text)
    provider = (GRAFANA / "provisioning" / "dashboards" / "ere-proxy.yaml").read_text()
    assert "type: file" in provider and "path:" in provider
