"""The dashboards and alert rules: valid structure, and they only query series the processes export
(their readers are in `testkit.grafana`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from proxy.api.metrics import ApiMetrics
from proxy.api.throttle import Throttle
from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.ere.jobs.worker import WorkerMetrics
from proxy.forward.policy import LinkEnd
from proxy.outbox.entries import Budget
from proxy.runtime.config import ApiSettings
from proxy.runtime.metrics import (
    SLO_HANDSHAKE_OUTCOMES,
    JournalCollector,
    OutboxCollector,
    ProxyMetrics,
    TrackerCounts,
)
from testkit.grafana import (
    ALERTS,
    GRAFANA,
    UPSTREAM_SERIES,
    alert_rules,
    dashboard_problems,
    dashboards,
    panel_queries,
    provisioned_datasource_uid,
    resolve,
    rows,
    runbook_url_problems,
    variable_query,
    variables,
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


async def role_families(tmp_path: Path) -> dict[str, list[Metric]]:
    """Every metric family the proxy, ERE worker and partner API processes can export, by role."""
    registry = ProxyMetrics().registry
    spill = SpillLog(tmp_path / "spill")
    try:
        registry.register(JournalCollector(Journal(spill), spill_max_bytes=10))
        registry.register(OutboxCollector(Budget(10, 10), list))
        registry.register(TrackerCounts())
        worker = WorkerMetrics(CollectorRegistry(), pipeline=True)
        await worker.refresh(_NoRows())
        api = ApiMetrics()
        api.watch_throttle(Throttle(ApiSettings()))
        return {
            "proxy": list(registry.collect()),
            "worker": list(worker.registry.collect()),
            "api": list(api.registry.collect()),
        }
    finally:
        spill.close()


async def exported_series(tmp_path: Path) -> set[str]:
    """Names of every series the proxy, ERE worker and partner API processes can export."""
    names: set[str] = set()
    for families in (await role_families(tmp_path)).values():
        for family in families:
            suffixes = {
                "counter": ["_total"],
                "gauge": [""],
                "histogram": ["_bucket", "_sum", "_count"],
            }[family.type]
            names.update(family.name + suffix for suffix in suffixes)
    return names


async def test_each_role_exports_under_one_prefix_of_its_own_with_its_build_info(tmp_path):
    prefixes = {"proxy": "ere_proxy_", "worker": "ere_worker_", "api": "ere_api_"}
    for role, families in (await role_families(tmp_path)).items():
        own = [f.name for f in families if not f.name.startswith(("process_", "python_"))]
        assert own and all(name.startswith(prefixes[role]) for name in own), (role, own)
        assert f"{prefixes[role]}build_info" in own, role


def test_the_three_dashboards_are_there_with_their_uids():
    assert {d["uid"] for d in dashboards().values()} == DASHBOARD_UIDS
    assert set(dashboards()) == {"proxy-overview.json", "reliability.json", "ere-pipeline.json"}


def test_dashboards_are_valid_and_use_the_provisioned_datasource():
    uid = provisioned_datasource_uid()
    for name, dashboard in dashboards().items():
        assert dashboard_problems(dashboard, uid) == [], name


def test_the_structure_check_finds_what_breaks_a_dashboard():
    good = dashboards()["proxy-overview.json"]
    uid = provisioned_datasource_uid()
    broken = json.loads(json.dumps(good))
    panels = [panel for panel in broken["panels"] if panel["type"] != "row"]
    panels[1]["id"] = panels[0]["id"]
    panels[0]["gridPos"]["w"] = 30
    panels[0]["targets"][0].pop("refId")
    panels[2]["datasource"] = {"type": "prometheus", "uid": uid}  # the data source hard-wired
    panels[3]["targets"][0]["expr"] = "rate(ere_proxy_frames_total[1m])"
    panels[4]["targets"][0]["datasource"] = {"type": "prometheus", "uid": uid}
    problems = "\n".join(dashboard_problems(broken, uid))
    for expected in (
        "ids not unique",
        "outside the 24 columns",
        "refIds",
        f"panel {panels[2]['id']} {panels[2]['title']!r}: datasource is not the $datasource",
        "not on $datasource",
        "aggregate",
        "overlaps",
        "ere_proxy_frames_total not filtered by $instance",
    ):
        assert expected in problems, expected


def test_a_panel_or_dashboard_without_the_datasource_variable_fails():
    uid = provisioned_datasource_uid()
    for name, good in dashboards().items():
        no_datasource = json.loads(json.dumps(good))
        panel = next(p for p in no_datasource["panels"] if p["type"] != "row")
        del panel["datasource"]
        assert [p for p in dashboard_problems(no_datasource, uid) if "$datasource" in p] == [
            f"panel {panel['id']} {panel['title']!r}: datasource is not the $datasource variable"
        ], name
        no_variable = json.loads(json.dumps(good))
        no_variable["templating"]["list"] = [
            v for v in no_variable["templating"]["list"] if v["name"] != "datasource"
        ]
        assert "no $datasource variable of type datasource on prometheus" in dashboard_problems(
            no_variable, uid
        ), name
        elsewhere = json.loads(json.dumps(good))
        variables(elsewhere)["datasource"]["current"]["value"] = "another"
        assert any("does not default to" in p for p in dashboard_problems(elsewhere, uid)), name


def test_the_variable_check_finds_what_breaks_a_variable():
    uid = provisioned_datasource_uid()
    good = dashboards()["reliability.json"]
    broken = json.loads(json.dumps(good))
    defined = variables(broken)
    defined["instance"]["includeAll"] = False
    defined["upstream"]["allValue"] = None
    target = next(
        t
        for p in broken["panels"]
        for t in p.get("targets", [])
        if "ere_proxy_outbox_depth" in t["expr"]
    )
    target["expr"] = target["expr"].replace(', upstream=~"$upstream"', "") + " > $threshold"
    stat = next(p for p in broken["panels"] if p["type"] == "stat")
    del stat["fieldConfig"]["defaults"]["thresholds"]
    problems = "\n".join(dashboard_problems(broken, uid))
    for expected in (
        "$instance: needs label_values(..., instance), multi and include all",
        "$upstream: All must be '.*'",
        "ere_proxy_outbox_depth not filtered by $upstream",
        "$threshold used but not defined",
        f"panel {stat['id']} {stat['title']!r}: a stat without thresholds",
    ):
        assert expected in problems, expected
    unused = json.loads(json.dumps(good))
    for panel in unused["panels"]:
        for t in panel.get("targets", []):
            t["expr"] = (
                t["expr"]
                .replace(', upstream=~"$upstream"', "")
                .replace('{upstream=~"$upstream"}', "")
            )
    assert "$upstream defined but no query uses it" in dashboard_problems(unused, uid)


def test_dashboards_have_their_variables_and_resolve_on_all():
    expected = {
        "proxy-overview.json": {"datasource", "instance", "upstream", "mirror"},
        "reliability.json": {"datasource", "instance", "upstream"},
        "ere-pipeline.json": {"datasource", "instance"},
    }
    for name, dashboard in dashboards().items():
        defined = variables(dashboard)
        assert set(defined) == expected[name], name
        assert defined["datasource"]["type"] == "datasource"
        assert variable_query(defined["instance"])[1] == "instance"
        if "upstream" in defined:
            assert variable_query(defined["upstream"]) == (
                "ere_proxy_upstream_dials_total",
                "upstream",
            )
        for title, expr in panel_queries(dashboard):
            assert "$" not in resolve(expr), (name, title)
        uses = {v for _, expr in panel_queries(dashboard) for v in defined if f"${v}" in expr}
        assert uses == set(defined) - {"datasource"}, name


def test_rows_go_from_overview_to_drill_down():
    boards = dashboards()
    assert rows(boards["proxy-overview.json"]) == [
        "Service levels",
        "Traffic",
        "Back-offices ($upstream)",
        "Mirror $mirror",
        "Capacity",
        "Certificates",
        "Partner API",
    ]
    assert rows(boards["reliability.json"]) == [
        "Overview",
        "Outbox",
        "Capture pipeline",
        "Processes",
    ]
    assert rows(boards["ere-pipeline.json"]) == [
        "Freshness",
        "Sessions and eligibility",
        "Quarters",
        "Jobs",
    ]
    overview = boards["proxy-overview.json"]
    first = min(
        (p for p in overview["panels"] if p["type"] == "row"), key=lambda p: p["gridPos"]["y"]
    )
    top = [
        p
        for p in overview["panels"]
        if p["gridPos"]["y"] == first["gridPos"]["y"] + first["gridPos"]["h"]
    ]
    assert {p["title"] for p in top} == {
        "Connected chargers",
        "SLO status: good events over the last hour",
        "Error budget remaining (30 days)",
    }
    budget = next(p for p in top if p["title"].startswith("Error budget"))
    assert [t["legendFormat"] for t in budget["targets"]] == [
        "handshakes",
        "forwarding",
        "latency",
        "capture",
        "ERE freshness",
    ]


async def test_every_dashboard_query_names_an_exported_series(tmp_path):
    exported = await exported_series(tmp_path)
    for name, dashboard in dashboards().items():
        queries = [expr for _, expr in panel_queries(dashboard)]
        used = {series for expr in queries for series in raw_series(expr)}
        assert used and used <= exported, (name, used - exported)
        recorded = {found for expr in queries for found in RECORDED.findall(expr)}
        assert recorded <= set(recorded_series()), (name, recorded - set(recorded_series()))
        for variable in variables(dashboard).values():
            if variable["type"] == "query":
                assert variable_query(variable)[0] in exported, (name, variable["name"])
    assert UPSTREAM_SERIES - set(recorded_series()) <= exported


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


def test_every_alert_links_its_runbook_section():
    rules = alert_rules()
    runbook = (GRAFANA / "RUNBOOK.md").read_text()
    assert runbook_url_problems(rules, runbook) == []
    assert all("runbook_url" in rule.annotations for rule in rules)


def test_the_runbook_link_check_finds_missing_sections_and_wrong_links():
    rules = alert_rules()
    runbook = (GRAFANA / "RUNBOOK.md").read_text()
    without = runbook.replace("\n## UpstreamDown\n", "\n## Upstream down\n")
    assert runbook_url_problems(rules, without) == [
        "UpstreamDown: RUNBOOK.md has no section #upstreamdown"
    ]
    text = ALERTS.read_text()
    swapped = text.replace("RUNBOOK.md#outboxfull\n", "RUNBOOK.md#outboxgrowing\n", 1)
    unlinked = text.replace("runbook_url: grafana/RUNBOOK.md#proxydown\n", "", 1)
    assert runbook_url_problems(alert_rules(swapped), runbook) == [
        "OutboxFull: runbook_url grafana/RUNBOOK.md#outboxgrowing is not its own section"
    ]
    assert runbook_url_problems(alert_rules(unlinked), runbook) == ["ProxyDown: no runbook_url"]


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


def test_the_objectives_count_series_the_proxy_exports_at_zero_from_its_start():
    """rate() and increase() miss the first failures of a series that appears with them."""
    events = recorded_series()["slo:ere_proxy_handshake_events:increase1h"]
    counted = re.search(r'outcome=~"([^"]+)"', events)
    assert counted is not None and sorted(counted[1].split("|")) == sorted(SLO_HANDSHAKE_OUTCOMES)
    registry = ProxyMetrics().registry
    for outcome in SLO_HANDSHAKE_OUTCOMES:
        assert registry.get_sample_value("ere_proxy_handshakes_total", {"outcome": outcome}) == 0
    for end in LinkEnd:
        assert registry.get_sample_value("ere_proxy_link_ends_total", {"reason": end.value}) == 0
