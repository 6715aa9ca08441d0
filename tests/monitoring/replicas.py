"""What a PromQL expression must do when several backend replicas are scraped (Compose's
dns_sd_configs, Kubernetes pods): each replica is its own `instance`.

* Gauges the backend reads from the database at scrape time (api/metrics.py
  `DatabaseCollector`) have the same value on every replica: aggregate them with `max` or
  `min` across instances; a `sum` counts the one value N times.
* Everything else a replica counts for itself (request counters, histograms) is that
  replica's share: aggregate across instances, and a rate or increase of a counter with `sum`
  (a `max` of the replicas' rates is not the service's rate).
* Process properties (`up`, CPU, memory, the connection pool, the served model) may be shown or
  alerted on per instance.
"""

from __future__ import annotations

from collections.abc import Iterator

import promql_parser

from api.metrics import DatabaseCollector

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PER_REPLICA_PREFIXES = ("up", "process_", "python_", "rps_model_info", "rps_model_loaded", "rps_db_pool_")
COUNTER_READS = {"rate", "irate", "increase"}


def database_derived() -> set[str]:
    """Series names of the database-derived metrics (a histogram's three series each)."""
    names = set()
    for family in DatabaseCollector(pool=None, threshold=0).describe():
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in HISTOGRAM_SERIES}
        else:
            names.add(family.name)
    return names


def _selectors(node, aggregation, functions: tuple[str, ...]) -> Iterator[tuple[object, object, tuple[str, ...]]]:
    """(selector, its nearest enclosing aggregation or None, functions between the two)."""
    if isinstance(node, promql_parser.AggregateExpr):
        yield from _selectors(node.expr, node, ())
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from _selectors(arg, aggregation, (*functions, node.func.name))
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _selectors(node.lhs, aggregation, functions)
        yield from _selectors(node.rhs, aggregation, functions)
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from _selectors(node.expr, aggregation, functions)
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from _selectors(node.vector_selector, aggregation, functions)
    elif isinstance(node, promql_parser.VectorSelector):
        yield node, aggregation, functions


def _drops_instance(aggregation) -> bool:
    modifier = aggregation.modifier
    if modifier is None:
        return True
    if modifier.type == promql_parser.AggModifierType.By:
        return "instance" not in modifier.labels
    return "instance" in modifier.labels


def aggregation_problems(expr: str) -> list[str]:
    """Why `expr` would be wrong with several replicas (empty when it is right)."""
    derived = database_derived()
    problems = []
    for selector, aggregation, functions in _selectors(promql_parser.parse(expr), None, ()):
        name = selector.name or ""
        if name.startswith(PER_REPLICA_PREFIXES) and name not in derived:
            continue
        op = str(aggregation.op) if aggregation is not None else None
        if aggregation is None or not _drops_instance(aggregation):
            problems.append(f"{name} is not aggregated across instances")
        elif name in derived and op not in ("max", "min"):
            problems.append(f"{name} is read from the database by every replica: {op}() counts it per replica")
        elif name not in derived and COUNTER_READS & set(functions) and op != "sum":
            problems.append(f"{name}: the replicas' rates add up, {op}() does not")
    return problems
