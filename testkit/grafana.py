"""The Grafana dashboards and alert rules as data: their files, panels, queries and rules, and what
makes a dashboard unusable once provisioned. Read by the unit checks and by the end-to-end test
that runs every query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
ALERTS = GRAFANA / "alerts.yml"
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
