"""Static checks of monitoring/: promtool on the configs and rules, unit tests for every
alert, and the Grafana provisioning (uids, panel ids, expressions) without Grafana."""

from __future__ import annotations

import subprocess

import promql_parser
import pytest
import yaml

from tests.monitoring import grafana, replicas
from tests.monitoring.conftest import MONITORING, RULE_FILES, require_prometheus
from tests.support.procs import PROJECT_ROOT

RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
CONFIGS = [MONITORING / "prometheus.yml", MONITORING / "prometheus.compose.yml"]


def promtool(*args: str) -> subprocess.CompletedProcess:
    require_prometheus()
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def _alerts() -> list[dict]:
    return [r for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config) -> None:
    r = promtool("check", "config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", *map(str, RULE_FILES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules() -> None:
    r = promtool("test", "rules", *map(str, RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in _alerts()}
    assert names == {
        "BackendDown", "BackendAbsent", "BackendHigh5xxRate", "BackendLatencyHigh", "ModelNotLoaded", "DatabaseLarge",
        "RetrainFailed", "RetrainDeliveryRefused", "RetrainOverdue", "FeedbackAccuracyLow", "ConfidenceDropping",
    }  # fmt: skip
    assert names - fired == set(), "alerts never shown firing in monitoring/tests"
    assert names - quiet == set(), "alerts never shown staying quiet in monitoring/tests"


def test_alerts_are_labelled_and_documented() -> None:
    docs = (PROJECT_ROOT / "docs" / "monitoring.md").read_text().lower()
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {anchor}" in docs, f"docs/monitoring.md has no section for {rule['alert']}"


def test_native_and_compose_configs_differ_only_in_targets() -> None:
    native, compose = (yaml.safe_load(p.read_text()) for p in CONFIGS)
    assert native["rule_files"] == compose["rule_files"] == ["rules/*.yml"]

    discovery = ("static_configs", "dns_sd_configs")

    def jobs(cfg: dict) -> dict[str, dict]:
        return {j["job_name"]: {k: v for k, v in j.items() if k not in discovery} for j in cfg["scrape_configs"]}

    def job(cfg: dict, name: str) -> dict:
        (job_cfg,) = [j for j in cfg["scrape_configs"] if j["job_name"] == name]
        return job_cfg

    assert jobs(native) == jobs(compose)
    # Natively one backend on loopback; in Compose every replica of the `backend` service, each
    # its own target (Docker's DNS answers one A record per container).
    assert job(native, "backend") == {**jobs(native)["backend"], "static_configs": [{"targets": ["127.0.0.1:8000"]}]}
    [dns] = job(compose, "backend")["dns_sd_configs"]
    assert set(job(compose, "backend")) & set(discovery) == {"dns_sd_configs"}
    assert (dns["names"], dns["type"], dns["port"]) == (["backend"], "A", 8000)


def test_compose_mounts_what_the_provisioning_expects() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    prom = compose["prometheus"]["volumes"]
    assert "./monitoring/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro" in prom
    assert "./monitoring/rules:/etc/prometheus/rules:ro" in prom
    provider = yaml.safe_load((grafana.GRAFANA / "provisioning" / "dashboards" / "rps.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["grafana"]["volumes"] if v.startswith("./")}
    assert mounts[dashboards_path] == "./monitoring/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    datasource = yaml.safe_load((grafana.GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------- Grafana


def _datasource_uid() -> str:
    provisioned = yaml.safe_load((grafana.GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = provisioned["datasources"]
    assert ds["type"] == "prometheus"
    return ds["uid"]


def test_dashboards_are_provisioned_with_unique_uids() -> None:
    uids = [grafana.load(p)["uid"] for p in grafana.DASHBOARD_FILES]
    assert sorted(uids) == ["rps-model", "rps-service"]


@pytest.mark.parametrize("path", grafana.DASHBOARD_FILES, ids=lambda p: p.name)
def test_panel_ids_unique_and_every_query_uses_the_provisioned_datasource(path) -> None:
    uid = _datasource_uid()
    board = grafana.load(path)
    panels = list(grafana.panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}: {ids}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": uid}, (panel["title"], t["refId"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, panel["title"]
    for var in board["templating"]["list"]:
        assert var["datasource"] == {"type": "prometheus", "uid": uid}, var["name"]


@pytest.mark.parametrize("target", grafana.all_targets(), ids=lambda t: t.name)
def test_panel_expression_parses_after_substitution(target) -> None:
    variables = grafana.template_variables(target.dashboard)
    expr = grafana.substitute(target.expr, {name: v["allValue"] for name, v in variables.items()})
    assert "$" not in expr and "[[" not in expr, expr
    promql_parser.parse(expr)


def test_dashboards_show_what_the_issue_asks_for() -> None:
    exprs = {
        uid: " ".join(t.expr for t in grafana.all_targets() if t.dashboard == uid)
        for uid in ("rps-service", "rps-model")
    }
    service = [
        "rate(http_requests_total",  # request rate, endpoint hits, errors
        'status=~"5..',
        "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket",
        "increase(http_requests_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ]
    model = [
        "rps_predictions_total",
        "rps_prediction_confidence_bucket",
        "rps_model_info",
        "rps_feedback_accuracy",
        "rps_model_reloads_total",
        "rps_retrain_requests",
        "rps_retrain_duration_seconds_count",
        "rps_last_retrain_duration_seconds",
    ]
    assert [s for s in service if s not in exprs["rps-service"]] == []
    assert [s for s in model if s not in exprs["rps-model"]] == []


# ---------------------------------------------------------------- several backend replicas


def _rule_exprs() -> list[tuple[str, str]]:
    return [(r.get("alert") or r["record"], r["expr"]) for r in _alerts()]


@pytest.mark.parametrize("target", grafana.all_targets(), ids=lambda t: t.name)
def test_panel_aggregates_across_replicas(target) -> None:
    variables = grafana.template_variables(target.dashboard)
    expr = grafana.substitute(target.expr, {name: v["allValue"] for name, v in variables.items()})
    assert replicas.aggregation_problems(expr) == [], (target.panel_title, expr)


@pytest.mark.parametrize(("name", "expr"), _rule_exprs(), ids=[n for n, _ in _rule_exprs()])
def test_alert_aggregates_across_replicas(name: str, expr: str) -> None:
    assert replicas.aggregation_problems(expr) == [], name


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('sum(rps_predictions_since_retrain{job="backend"})', "counts it per replica"),
        ('sum by (state) (rps_retrain_requests{job="backend"})', "counts it per replica"),
        ("histogram_quantile(0.5, sum by (le) (rps_retrain_duration_seconds_bucket))", "counts it per replica"),
        ("rps_database_size_bytes", "not aggregated across instances"),
        ('max by (instance) (rps_feedback_accuracy{job="backend"})', "not aggregated across instances"),
        ("rate(http_requests_total[5m])", "not aggregated across instances"),
        ("sum by (instance, le) (rate(http_request_duration_seconds_bucket[5m]))", "not aggregated across instances"),
        ("max(rate(rps_predictions_total[5m]))", "rates add up"),
    ],
)
def test_the_replica_check_refuses_what_would_be_wrong(expr: str, problem: str) -> None:
    found = replicas.aggregation_problems(expr)
    assert len(found) == 1 and problem in found[0], found


def test_the_replica_check_knows_every_database_gauge() -> None:
    derived = replicas.database_derived()
    # The gauges docs/scale.md names, and the histogram the database gives per outcome.
    assert {"rps_predictions_since_retrain", "rps_retrain_requests", "rps_database_size_bytes"} <= derived
    assert "rps_retrain_duration_seconds_bucket" in derived and "rps_predictions_total" not in derived
