"""The dashboards only query series the proxy exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from proxy.metrics import ProxyMetrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"


def exported_series() -> set[str]:
    names = set()
    for family in ProxyMetrics().registry.collect():
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_every_dashboard_query_names_an_exported_series():
    exported = exported_series()
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files
    for path in files:
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        used = {name for expr in exprs for name in re.findall(r"ere_proxy_\w+", expr)}
        assert used and used <= exported, (path.name, used - exported)
