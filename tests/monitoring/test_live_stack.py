"""A real Prometheus scraping real backends that served real predictions: the dashboards'
and the alert rules' expressions run against it (one stack for the whole module)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import promql_parser
import pytest
import yaml

from tests.monitoring import grafana
from tests.monitoring.conftest import RULE_FILES, Backend, Prometheus, Traffic, predictions_per_worker

pytestmark = pytest.mark.services

QUERY_TIMEOUT = 20.0  # seconds a panel may take to show data: rate() needs two scrapes


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last result: {last!r}")


def values_by(prom: Prometheus, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in prom.query(expr)["result"]}


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, backends: list[Backend], traffic: dict[str, Traffic]) -> Prometheus:
    """Prometheus once it has scraped every backend after all of the traffic."""
    expected = {target: float(len(t.predictions)) for target, t in traffic.items()}
    wait_for(
        lambda: (
            values_by(prometheus, 'sum by (instance) (rps_predictions_total{job="backend"})', "instance") == expected
        ),
        30,
        f"Prometheus to see the predictions {expected}",
    )
    wait_for(
        lambda: values_by(prometheus, 'max by (job) (rps_last_retrain_failed{job="backend"})', "job"),
        10,
        "the seeded retrain outcomes",
    )
    time.sleep(2.5)  # two more scrapes: every rate() has two samples with the final counts
    return prometheus


def test_every_backend_target_is_up(scraped: Prometheus, backends: list[Backend]) -> None:
    targets = httpx.get(f"{scraped.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    health = {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "backend"}
    assert health == {b.target: "up" for b in backends}


def test_counters_match_the_traffic_on_each_backend(scraped: Prometheus, traffic: dict[str, Traffic]) -> None:
    """Exact counts on both backends: with two workers each scrape is answered by one of them,
    so this holds only if the workers' values are merged (multiprocess mode)."""
    for target, sent in traffic.items():
        sel = f'job="backend", instance="{target}"'
        by_label = values_by(scraped, f"sum by (label) (rps_predictions_total{{{sel}}})", "label")
        want = {c: float(sum(p["label"] == c for p in sent.predictions)) for c in ("rock", "paper", "scissors")}
        assert by_label == want, target
        ok_predicts = f'sum(http_requests_total{{{sel}, handler="/predict", method="POST", status="200"}})'
        assert values_by(scraped, ok_predicts, "") == {"": float(len(sent.predictions))}, target
        rejected = values_by(scraped, f"sum by (reason) (rps_rejected_inputs_total{{{sel}}})", "reason")
        assert rejected == {k: float(v) for k, v in sent.rejected.items()}, target
        feedback = values_by(scraped, f"sum(rps_feedback_total{{{sel}}})", "")
        assert feedback == {"": float(sent.feedback)}, target
        count = values_by(scraped, f"sum(rps_prediction_confidence_count{{{sel}}})", "")
        assert count == {"": float(len(sent.predictions))}, target
        by_status = values_by(scraped, f"sum by (status) (http_requests_total{{{sel}, handler='/predict'}})", "status")
        assert set(by_status) >= {"200", "400", "415", "422"}, by_status


def test_both_workers_served_and_report_their_processes(
    scraped: Prometheus, backends: list[Backend], traffic: dict[str, Traffic]
) -> None:
    multi = next(b for b in backends if b.workers == 2)
    per_pid = predictions_per_worker(multi)
    served = {str(pid): n for pid, n in per_pid.items() if n}
    assert sum(per_pid.values()) == len(traffic[multi.target].predictions)
    assert len(served) == 2, f"the predictions went to one worker only: {per_pid}"
    rss = values_by(scraped, f'process_resident_memory_bytes{{instance="{multi.target}"}}', "pid")
    assert set(served) <= set(rss) and len(rss) == 2, rss
    assert all(v > 50e6 for v in rss.values()), rss


def test_model_info_is_the_served_version(scraped: Prometheus, backends: list[Backend]) -> None:
    for b in backends:
        version = httpx.get(f"{b.url}/model", timeout=5).json()["version"]
        served = values_by(scraped, f'max by (version) (rps_model_info{{instance="{b.target}"}} == 1)', "version")
        assert served == {version: 1.0}
        assert values_by(scraped, f'min(rps_model_loaded{{instance="{b.target}"}})', "") == {"": 1.0}


# ---------------------------------------------------------------- dashboards


def _instance_values(prom: Prometheus) -> list[str]:
    """What Grafana offers for $instance (its label_values query), plus its "All" value."""
    var = grafana.template_variables("rps-service")["instance"]
    match = var["definition"].removeprefix("label_values(").removesuffix(")")
    selector, label = (s.strip() for s in match.rsplit(",", 1))
    found = httpx.get(f"{prom.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=5).json()
    return [*found["data"], var["allValue"]]


@pytest.mark.parametrize("target", grafana.all_targets(), ids=lambda t: t.name)
def test_panel_returns_data_for_every_instance(scraped: Prometheus, backends: list[Backend], target) -> None:
    instances = _instance_values(scraped)
    assert set(instances) == {b.target for b in backends} | {".*"}
    for instance in instances:
        expr = grafana.substitute(target.expr, {"instance": instance})
        promql_parser.parse(expr)
        result = wait_for(
            lambda expr=expr: scraped.query(expr)["result"],
            QUERY_TIMEOUT,
            f"{target.name} ({target.panel_title}) with instance={instance}: {expr}",
        )
        assert result


# ---------------------------------------------------------------- alert rules


def _rules() -> list[dict]:
    return [r for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r.get("record"))
def test_alert_expression_evaluates(scraped: Prometheus, rule: dict) -> None:
    promql_parser.parse(rule["expr"])
    scraped.query(rule["expr"])  # raises unless Prometheus answers status=success


def test_prometheus_evaluates_every_rule_without_error(scraped: Prometheus) -> None:
    def evaluated() -> list[dict]:
        groups = httpx.get(f"{scraped.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = wait_for(evaluated, 10, "every rule to be evaluated once")
    assert {r["name"] for r in rules} == {r["alert"] for r in _rules()}
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []


def test_retrain_failed_fires_on_the_seeded_failure_and_healthy_alerts_stay_quiet(scraped: Prometheus) -> None:
    firing = wait_for(
        lambda: values_by(scraped, 'ALERTS{alertstate="firing"}', "alertname"), 10, "RetrainFailed to fire"
    )
    assert set(firing) == {"RetrainFailed"}
    quiet = values_by(scraped, "ALERTS", "alertname")
    assert not set(quiet) & {"BackendDown", "ModelNotLoaded", "BackendHigh5xxRate"}
