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
RUNBOOK_URL = (
    "grafana/RUNBOOK.md"  # alerts' runbook_url: this, relative to the repository, #<alert>
)
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
# Every panel and target queries the data source the dashboard's `$datasource` variable picks.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
STAT_TYPES = {"stat", "gauge"}
VARIABLE_USE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LABEL_VALUES = re.compile(r"^label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)$")
# The dashboards' panels on certificates, which have data only where the proxy reads one (a TLS
# listener, a wss back-office): tests/e2e/test_prometheus_proxy_alerts.py runs both.
CERTIFICATE_PANELS = frozenset(
    {"Listener certificate: days left", "Back-office certificates: days left"}
)
PIPELINE_SERIES = "ere_worker_pipeline_"  # figures of the database, exported by ERE worker 0
# Series carrying an `upstream` label (a back-office's host:port): `$upstream` filters them.
UPSTREAM_SERIES = frozenset(
    {
        "ere_proxy_upstream_dials_total",
        "ere_proxy_upstream_dial_seconds_bucket",
        "ere_proxy_upstream_dial_seconds_sum",
        "ere_proxy_upstream_dial_seconds_count",
        "ere_proxy_upstream_offline_links",
        "ere_proxy_outbox_depth",
        "ere_proxy_outbox_oldest_seconds",
        "ere_proxy_upstream_certificate_expiry_timestamp_seconds",
        "upstream:ere_proxy_upstream_dial_failures:ratio_rate5m",
    }
)
# Series carrying a `mirror` label (a mirror back-office's host:port): `$mirror` filters them.
MIRROR_SERIES = frozenset(
    {
        "ere_proxy_mirror_connected",
        "ere_proxy_mirror_queued",
        "ere_proxy_mirror_sent_total",
        "ere_proxy_mirror_dropped_total",
        "ere_proxy_mirror_answers_dropped_total",
        "ere_proxy_mirror_calls_total",
        "ere_proxy_mirror_protocol_errors_total",
    }
)
# What Grafana puts in place of its own variables and of "All" of a multi-value variable, as the
# end-to-end test sends the queries to Prometheus.
ALL = ".*"
BUILTIN_VALUES = {"__rate_interval": "10s", "__interval": "1s", "__range": "5m"}


def provisioned_datasource_uid() -> str:
    text = (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    uids = re.findall(r"^\s*uid:\s*(\S+)\s*$", text, re.M)
    assert len(uids) == 1, uids
    return uids[0]


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def rows(dashboard: dict[str, Any]) -> list[str]:
    """Titles of the dashboard's rows, top to bottom."""
    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    return [panel["title"] for panel in panels if panel["type"] == "row"]


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
    problems.extend(variable_problems(dashboard, datasource_uid))
    if not dashboard["panels"]:
        problems.append("no panels")
    elif dashboard["panels"][0].get("type") != "row":
        problems.append("the first panel is not a row (rows go from overview to drill-down)")
    ids = [panel.get("id") for panel in dashboard["panels"]]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids not unique integers: {ids}")
    boxes: list[tuple[str, dict[str, int]]] = []
    for panel in dashboard["panels"]:
        name = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("type") not in PANEL_TYPES or not panel.get("title"):
            problems.append(f"{name}: bad type or no title")
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{name}: datasource is not the $datasource variable")
        if panel.get("type") in STAT_TYPES:
            steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
            if len(steps.get("steps", [])) < 2:
                problems.append(f"{name}: a stat without thresholds")
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
            if target.get("datasource", DATASOURCE) != DATASOURCE:
                problems.append(f"{name}: target {target.get('refId')} not on $datasource")
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


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> template variable."""
    return {v.get("name", ""): v for v in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: dict[str, Any]) -> tuple[str, str]:
    """(series, label) of a query variable's `label_values(series, label)`."""
    query = variable.get("query")
    text = query.get("query", "") if isinstance(query, dict) else str(query)
    match = LABEL_VALUES.match(text.strip())
    if match is None:
        raise ValueError(f"not label_values(series, label): {text!r}")
    return match[1], match[2]


def variable_promql(variable: dict[str, Any]) -> str:
    """An instant query that returns a sample per value the variable offers on Prometheus."""
    series, label = variable_query(variable)
    return f"count by ({label}) ({series})"


def resolve(expr: str) -> str:
    """The query as Prometheus gets it from Grafana with every variable on "All"."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        return BUILTIN_VALUES.get(name, match[0] if name.startswith("__") else ALL)

    return VARIABLE_USE.sub(value, expr)


def selectors(expr: str) -> list[tuple[str, str]]:
    """(series name, matchers) of every series selector of an expression."""
    return [
        (m[1], m[2] or "")
        for m in re.finditer(
            r"(?<![\w:$])([a-z_][a-z0-9_]*(?::[a-z0-9_]+)*)(\{[^}]*\})?(?!\s*\()", expr
        )
        if "_" in m[1] and m[1] not in {"by", "without", "on", "ignoring", "offset", "bool"}
    ]


def variable_problems(dashboard: dict[str, Any], datasource_uid: str) -> list[str]:
    """What is wrong with the template variables: `$datasource` (a Prometheus data source,
    the provisioned one by default), query variables on `$datasource` that Prometheus can answer
    (`label_values`), `$instance`, `$upstream` and `$mirror` multi-value with "All" as `.*`, every variable
    used and defined, and the series they apply to filtered by them."""
    problems = []
    defined = variables(dashboard)
    source = defined.get("datasource")
    if source is None or source.get("type") != "datasource" or source.get("query") != "prometheus":
        problems.append("no $datasource variable of type datasource on prometheus")
    elif source.get("current", {}).get("value") != datasource_uid:
        problems.append(f"$datasource does not default to the provisioned {datasource_uid}")
    exprs = [t.get("expr", "") for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    used = {m[1] or m[2] for expr in exprs for m in VARIABLE_USE.finditer(expr)}
    for name in used - set(defined) - set(BUILTIN_VALUES):
        problems.append(f"${name} used but not defined")
    for name, variable in defined.items():
        if name == "datasource":
            continue
        if variable.get("type") != "query" or variable.get("datasource") != DATASOURCE:
            problems.append(f"${name}: not a query variable on $datasource")
            continue
        try:
            series, label = variable_query(variable)
        except ValueError as error:
            problems.append(f"${name}: {error}")
            continue
        if name not in used:
            problems.append(f"${name} defined but no query uses it")
        if name in {"instance", "upstream", "mirror"}:
            if label != name or not (variable.get("multi") and variable.get("includeAll")):
                problems.append(f"${name}: needs label_values(..., {name}), multi and include all")
            if variable.get("allValue") != ALL:
                problems.append(f"${name}: All must be {ALL!r} (the queries match with =~)")
        if name == "instance":
            # The series of the role the variable lists workers of (ere_proxy_, ere_worker_).
            # ERE worker 0 alone exports the pipeline figures (the database's, not a worker's).
            role = "_".join(series.split("_")[:2]) + "_"
            for expr in exprs:
                for found, matchers in selectors(expr):
                    if found.startswith(PIPELINE_SERIES):
                        continue
                    if found.startswith(role) and 'instance=~"$instance"' not in matchers:
                        problems.append(f"{found} not filtered by $instance in {expr!r}")
    for name, series in (("upstream", UPSTREAM_SERIES), ("mirror", MIRROR_SERIES)):
        if name not in defined:
            continue
        for expr in exprs:
            for found, matchers in selectors(expr):
                if found in series and f'{name}=~"${name}"' not in matchers:
                    problems.append(f"{found} not filtered by ${name} in {expr!r}")
    return problems


def heading_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer (GitHub's rule) gives the headings of a document: lower
    case, punctuation dropped, spaces as hyphens, a repeated one suffixed -1, -2, ..."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def runbook_url_problems(rules: list[AlertRule], runbook: str) -> list[str]:
    """Rules whose runbook_url does not point at their own section of RUNBOOK.md."""
    anchors = heading_anchors(runbook)
    problems = []
    for rule in rules:
        found = re.search(r"^\s*runbook_url:\s*(\S+)\s*$", rule.text, re.M)
        if found is None:
            problems.append(f"{rule.name}: no runbook_url")
        elif found[1] != f"{RUNBOOK_URL}#{rule.name.lower()}":
            problems.append(f"{rule.name}: runbook_url {found[1]} is not its own section")
        elif rule.name.lower() not in anchors:
            problems.append(f"{rule.name}: RUNBOOK.md has no section #{rule.name.lower()}")
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
