"""Reading the provisioned Grafana dashboards the way Grafana would: panels (rows included),
their PromQL targets, and the variables Grafana substitutes before querying."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import PROJECT_ROOT

GRAFANA = PROJECT_ROOT / "monitoring" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))

# What Grafana puts in for its built-in variables (values for a 5-minute view of a Prometheus
# that scrapes every second; any valid duration would do for checking the expressions).
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    datasource_uid: str | None

    @property
    def name(self) -> str:
        return f"{self.dashboard}#{self.panel_id}:{self.ref_id}"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(path: Path) -> list[Target]:
    board = load(path)
    out = []
    for panel in panels(board):
        for t in panel.get("targets", []):
            ds = t.get("datasource") or panel.get("datasource") or {}
            out.append(Target(board["uid"], panel["id"], panel["title"], t["refId"], t["expr"], ds.get("uid")))
    return out


def all_targets() -> list[Target]:
    return [t for path in DASHBOARD_FILES for t in targets(path)]


def template_variables(dashboard_uid: str) -> dict[str, dict]:
    for path in DASHBOARD_FILES:
        board = load(path)
        if board["uid"] == dashboard_uid:
            return {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    raise KeyError(dashboard_uid)


def substitute(expr: str, values: dict[str, str]) -> str:
    """`expr` with Grafana's built-ins and the given template variables filled in; an unknown
    variable raises, as it would show as an error in Grafana."""

    def replace(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in values:
            return values[name]
        raise KeyError(f"undefined variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)
