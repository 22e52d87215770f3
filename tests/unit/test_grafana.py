"""The dashboards and alert rules: valid structure, and they only query series the processes export.

The helpers here (dashboards, panel queries, alert rules, the structure check) are also used by
`tests/e2e/test_prometheus.py`, which runs every query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.ere.jobs.worker import WorkerMetrics
from proxy.outbox.entries import Budget
from proxy.runtime.metrics import JournalCollector, OutboxCollector, ProxyMetrics

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
ALERTS = GRAFANA / "alerts.yml"
DASHBOARD_UIDS = {"ere-proxy-overview", "ere-proxy-reliability", "ere-pipeline"}
PANEL_TYPES = {
    "stat",
    "timeseries",
    "heatmap",
    "bargauge",
    "table",
    "text",
    "gauge",
    "piechart",
    "row",
}
AGGREGATION = re.compile(r"\b(sum|max|min|avg|count|topk)\s*(by\s*\([^)]*\)\s*)?\(")
SERIES = re.compile(r"\b(ere_[a-z0-9_]+)")
PROMETHEUS_SERIES = {"up"}  # Prometheus's own, per scrape target


def provisioned_datasource_uid() -> str:
    text = (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    uids = re.findall(r"^\s*uid:\s*(\S+)\s*$", text, re.M)
    assert len(uids) == 1, uids
    return uids[0]


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def dashboard_problems(dashboard: dict[str, Any], datasource_uid: str) -> list[str]:
    """What makes a dashboard invalid or unusable once provisioned (an empty list: none)."""
    problems = []
    for key, kind in (
        ("uid", str),
        ("title", str),
        ("schemaVersion", int),
        ("panels", list),
        ("time", dict),
    ):
        if not isinstance(dashboard.get(key), kind):
            problems.append(f"{key} missing or not a {kind.__name__}")
    if problems:
        return problems
    if not dashboard["panels"]:
        problems.append("no panels")
    ids = [panel.get("id") for panel in dashboard["panels"]]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids not unique integers: {ids}")
    boxes: list[tuple[str, dict[str, int]]] = []
    for panel in dashboard["panels"]:
        name = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("type") not in PANEL_TYPES or not panel.get("title"):
            problems.append(f"{name}: bad type or no title")
        if panel.get("datasource") != {"type": "prometheus", "uid": datasource_uid}:
            problems.append(
                f"{name}: datasource is not the provisioned Prometheus ({datasource_uid})"
            )
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "xywh"):
            problems.append(f"{name}: gridPos needs integer x, y, w, h")
            continue
        if (
            grid["x"] < 0
            or grid["y"] < 0
            or grid["w"] < 1
            or grid["h"] < 1
            or grid["x"] + grid["w"] > 24
        ):
            problems.append(f"{name}: gridPos {grid} outside the 24 columns")
        for other, box in boxes:
            if (
                grid["x"] < box["x"] + box["w"]
                and box["x"] < grid["x"] + grid["w"]
                and grid["y"] < box["y"] + box["h"]
                and box["y"] < grid["y"] + grid["h"]
            ):
                problems.append(f"{name}: overlaps {other}")
        boxes.append((name, grid))
        targets = panel.get("targets")
        if panel.get("type") == "row":
            continue
        if not targets:
            problems.append(f"{name}: no targets")
            continue
        refs = [target.get("refId") for target in targets]
        if len(set(refs)) != len(refs) or not all(isinstance(r, str) and r for r in refs):
            problems.append(f"{name}: refIds missing or not unique: {refs}")
        for target in targets:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{name}: a target without expr")
                continue
            if "legendFormat" not in target:
                problems.append(f"{name}: target {target.get('refId')} without legendFormat")
            if target.get("datasource", panel["datasource"]) != panel["datasource"]:
                problems.append(f"{name}: target {target.get('refId')} on another datasource")
            if not AGGREGATION.search(expr):
                problems.append(f"{name}: {expr!r} does not aggregate over workers")
        if panel["type"] == "heatmap":
            for target in targets:
                expr = target["expr"]
                if (
                    target.get("format") != "heatmap"
                    or "_bucket" not in expr
                    or "by (le)" not in expr
                ):
                    problems.append(
                        f"{name}: a heatmap needs histogram buckets summed by le, format heatmap"
                    )
    return problems


@dataclass
class AlertRule:
    name: str
    expr: str
    annotations: set[str]
    text: str


def alert_rules(text: str | None = None) -> list[AlertRule]:
    """The alerting rules of grafana/alerts.yml: name, expression, annotation keys.

    A small reader for the file's own layout (one `- alert:` item per rule, `expr:` inline or as a
    block scalar); the e2e test checks it against the rules Prometheus itself loaded.
    """
    text = ALERTS.read_text() if text is None else text
    rules = []
    for chunk in re.split(r"^\s*- alert:", text, flags=re.M)[1:]:
        lines = chunk.splitlines()
        name = lines[0].strip()
        expr = ""
        for i, line in enumerate(lines):
            match = re.match(r"^(\s*)expr:\s*(.*)$", line)
            if match:
                indent, rest = len(match[1]), match[2].strip()
                if rest and rest[0] not in "|>":
                    expr = rest
                else:
                    block = []
                    for following in lines[i + 1 :]:
                        if following.strip() and len(following) - len(following.lstrip()) <= indent:
                            break
                        block.append(following.strip())
                    expr = "\n".join(block).strip()
                break
        annotations = set()
        if "annotations:" in chunk:
            block = chunk.split("annotations:", 1)[1].splitlines()[1:]
            indents = [len(line) - len(line.lstrip()) for line in block if line.strip()]
            for line in block:
                depth = len(line) - len(line.lstrip())
                if line.strip() and depth < indents[0]:
                    break
                if depth == indents[0] and (key := re.match(r"\s*(\w+):", line)):
                    annotations.add(key[1])
        rules.append(AlertRule(name, expr, annotations, chunk))
    return rules


class _NoRows:
    """A database with empty tables, so the worker's pipeline families exist (without samples)."""

    async def fetch(self, query: str, *args: Any) -> list[tuple]:
        return []


async def exported_series(tmp_path: Path) -> set[str]:
    """Names of every series the proxy and ERE worker processes can export."""
    registry = ProxyMetrics().registry
    spill = SpillLog(tmp_path / "spill")
    try:
        registry.register(JournalCollector(Journal(spill)))
        registry.register(OutboxCollector(Budget(10, 10), list))
        worker = WorkerMetrics(CollectorRegistry(), pipeline=True)
        await worker.refresh(_NoRows())
        families = [*registry.collect(), *worker.registry.collect()]
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
        used = {series for _, expr in panel_queries(dashboard) for series in SERIES.findall(expr)}
        assert used and used <= exported, (name, used - exported)


async def test_every_alert_names_an_exported_series_and_explains_itself(tmp_path):
    exported = await exported_series(tmp_path)
    rules = alert_rules()
    names = [rule.name for rule in rules]
    assert len(names) == len(set(names))
    assert {"UpstreamDown", "OutboxGrowing", "JournalSpilling", "WorkerJobsFailing"} <= set(names)
    for rule in rules:
        used = set(SERIES.findall(rule.expr))
        others = set(re.findall(r"\b([a-z_]+)\{", rule.expr)) - used
        assert (used or others) and used <= exported and others <= PROMETHEUS_SERIES, (
            rule.name,
            rule.expr,
        )
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


def test_prometheus_scrapes_the_proxy_and_the_worker_and_loads_the_alerts():
    text = (GRAFANA / "prometheus.yml").read_text()
    assert set(re.findall(r"job_name:\s*(\S+)", text)) == {"ere-proxy", "ere-worker"}
    assert re.search(r"rule_files:\s*\n\s*- alerts\.yml", text)
    provider = (GRAFANA / "provisioning" / "dashboards" / "ere-proxy.yaml").read_text()
    assert "type: file" in provider and "path:" in provider
