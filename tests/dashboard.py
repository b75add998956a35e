"""The Grafana dashboard in deploy/grafana/: the metric names its queries use, to be checked against
what the collector and the alerter really serve (a renamed metric must not leave a blank panel)."""

from __future__ import annotations

import json
import re

from tests.services import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "liquidation-aggregator.json"


def dashboard_metrics() -> set[str]:
    """Every sample name (`liq_*`, `process_*`) in the dashboard's queries."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for e in exprs for name in re.findall(r"\b((?:liq|process)_[a-z_]+)\b", e)}
