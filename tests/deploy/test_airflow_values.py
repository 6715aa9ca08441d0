"""deploy/k8s/airflow/values.yaml, the project's values for the official Apache Airflow Helm
chart. The chart cannot be fetched here, so it is not rendered: the keys are checked against
the chart's own values.yaml (the Airflow 3 chart, as read from apache/airflow's chart/), the
Kubernetes objects inside against the Kubernetes schemas, and the wiring against the project:
KubernetesExecutor, the project's image and entrypoint, external PostgreSQL, its settings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import K8S, by_kind, containers, render
from tests.support.procs import PROJECT_ROOT
from utils import secret_policy

VALUES = K8S / "airflow" / "values.yaml"
# Keys of the chart's values.yaml this file may set (dotted paths). A key the chart does not
# have is silently ignored by Helm, which is the mistake this list catches.
CHART_KEYS = {
    "executor", "airflowVersion", "uid", "gid",
    "images.airflow.repository", "images.airflow.tag", "images.airflow.digest", "images.airflow.pullPolicy",
    "postgresql.enabled", "redis.enabled", "statsd.enabled",
    "data.metadataSecretName", "fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName",
    "env", "extraEnvFrom", "dags.persistence.enabled", "dags.gitSync.enabled",
    "logs.persistence.enabled", "logs.persistence.size", "logs.persistence.storageClassName",
    "logs.persistence.existingClaim",
    "apiServer.replicas", "apiServer.args", "apiServer.resources",
    "scheduler.replicas", "scheduler.args", "scheduler.resources",
    "dagProcessor.enabled", "dagProcessor.args", "dagProcessor.resources",
    "migrateDatabaseJob.args", "triggerer.enabled", "webserver.defaultUser.enabled",
    "workers.resources", "workers.extraVolumes", "workers.extraVolumeMounts",
}  # fmt: skip
# Free-form below these keys (airflow.cfg sections, env-var switches, Kubernetes objects).
OPEN_KEYS = ("config.", "enableBuiltInSecretEnvVars.")
# The chart's Kubernetes-typed values, checked against the Kubernetes schemas.
TYPED = {
    "resources": "io.k8s.api.core.v1.ResourceRequirements",
    "extraVolumes": "io.k8s.api.core.v1.Volume",
    "extraVolumeMounts": "io.k8s.api.core.v1.VolumeMount",
    "env": "io.k8s.api.core.v1.EnvVar",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|DATABASE_URL|FERNET", re.IGNORECASE)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of `node`; lists, and the chart's typed objects, are leaves."""
    if isinstance(node, dict) and not prefix.endswith(tuple(f".{k}" for k in TYPED)):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, node


def test_every_key_is_one_the_chart_reads(values: dict) -> None:
    unknown = [p for p, _ in _leaves(values) if p not in CHART_KEYS and not p.startswith(OPEN_KEYS)]
    assert not unknown, f"not keys of the Airflow chart: {unknown}"


def _pod_with(kind: str, item: Any) -> dict:
    """A Pod carrying one typed value where the chart renders it."""
    container: dict[str, Any] = {"name": "c"}
    spec: dict[str, Any] = {"containers": [container]}
    if kind == "resources":
        container["resources"] = item
    elif kind == "extraVolumes":
        spec["volumes"] = [item]
    elif kind == "extraVolumeMounts":
        container["volumeMounts"] = [item]
    else:
        container["env"] = [item]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}


def test_kubernetes_objects_inside_are_valid(values: dict) -> None:
    version = kubernetes_validate.latest_version()
    checked = 0
    for path, value in _leaves(values):
        kind = path.rsplit(".", 1)[-1]
        if kind not in TYPED:
            continue
        for item in value if isinstance(value, list) else [value]:
            try:
                kubernetes_validate.validate(_pod_with(kind, item), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path} is no {TYPED[kind]}: {exc}")
            checked += 1
    assert checked >= 10


def test_kubernetes_executor_on_the_projects_image_and_external_postgres(values: dict) -> None:
    assert values["executor"] == "KubernetesExecutor"
    assert values["postgresql"]["enabled"] is False and values["redis"]["enabled"] is False
    assert values["data"]["metadataSecretName"] and "metadataConnection" not in values["data"]
    pins = dict(
        line.split("==") for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines() if "==" in line
    )
    assert values["airflowVersion"] == pins["apache-airflow"]
    # The build file's airflow image, from the same registry and prefix as the other images.
    backend = next(c["image"] for c in containers(by_kind(render("overlays/production"), "Deployment")["backend"]))
    repository = values["images"]["airflow"]["repository"]
    assert repository == backend.split(":")[0].removesuffix("-backend") + "-airflow"
    build = yaml.safe_load((PROJECT_ROOT / "docker-compose.build.yml").read_text())
    assert "-airflow:" in build["services"]["airflow"]["image"]


def test_components_run_the_projects_entrypoint(values: dict) -> None:
    dockerfile = (PROJECT_ROOT / "airflow" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/app/airflow/entrypoint.sh"]' in dockerfile and "COPY airflow/ airflow/" in dockerfile
    entrypoint = (PROJECT_ROOT / "airflow" / "entrypoint.sh").read_text()
    subcommands = set(re.findall(r"^  ([a-z-]+)\)$", entrypoint, re.MULTILINE))
    assert {"init", "api-server", "scheduler", "dag-processor"} <= subcommands
    for component, sub in (("apiServer", "api-server"), ("scheduler", "scheduler"), ("dagProcessor", "dag-processor")):
        assert values[component]["args"] == [sub], component
        assert "command" not in values[component]  # the image's ENTRYPOINT stays
    # Task pods and the chart's own jobs pass whole commands, which the entrypoint runs as given.
    assert values["migrateDatabaseJob"]["args"][0] == "airflow"
    assert re.search(r'^  \*\)\n(    #.*\n)*    exec "\$@"$', entrypoint, re.MULTILINE)
    assert values["config"]["core"]["dags_folder"] == "/app/airflow/dags"
    assert values["config"]["core"]["auth_manager"].endswith("SimpleAuthManager")
    assert values["webserver"]["defaultUser"]["enabled"] is False  # FAB's create-user job


def test_settings_and_secrets_come_from_the_kustomize_objects(values: dict, settings_names: set[str]) -> None:
    refs = yaml.safe_load(values["extraEnvFrom"])
    assert [r["configMapRef"]["name"] for r in refs if "configMapRef" in r] == ["rps-config"]
    assert [r["secretRef"]["name"] for r in refs if "secretRef" in r] == ["rps-airflow-secrets"]
    assert secret_policy.ROLE_SECRETS["airflow"]
    assert "rps-config" in by_kind(render("base"), "ConfigMap")
    env = {e["name"]: e for e in values["env"]}
    assert env["SERVICE_ROLE"]["value"] == "airflow"
    for name, entry in env.items():
        assert name in settings_names or name.startswith("AIRFLOW__"), name
        assert not (SECRET_NAME.search(name) and "value" in entry), f"{name} written as a literal"
    # One JWT key, the project's AIRFLOW_JWT_SECRET: the chart must not set its own.
    assert values["enableBuiltInSecretEnvVars"]["AIRFLOW__API_AUTH__JWT_SECRET"] is False
    for path, value in _leaves(values):
        if SECRET_NAME.search(path.rsplit(".", 1)[-1]) and not path.endswith(("SecretName", "JWT_SECRET")):
            pytest.fail(f"{path} looks like a secret written into the values")
        assert not re.search(r"://[^/\s:@]+:[^@\s/]+@", str(value)), path
    # Every task pod mounts the DAG's shared workspace, a claim the kustomize base declares.
    claims = {v["persistentVolumeClaim"]["claimName"] for v in values["workers"]["extraVolumes"]}
    assert claims <= set(by_kind(render("base"), "PersistentVolumeClaim"))
    for claim in claims:
        assert by_kind(render("base"), "PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["mountPath"] for m in values["workers"]["extraVolumeMounts"]}
    dockerfile = (PROJECT_ROOT / "airflow" / "Dockerfile").read_text()
    assert "DATA_WORKSPACE=/workspace" in dockerfile and mounts == {"/workspace", "/app/artifacts"}


def test_the_entrypoint_derives_a_cluster_configuration_from_it(values: dict, tmp_path) -> None:
    """What airflow/entrypoint.sh exports in the chart's pods: scripts/env_export.py run with the
    ConfigMap, the values' env and (random, strong) role secrets, in production mode, so the
    settings' own checks pass too. One-machine defaults must not survive into the cluster."""
    import os
    import secrets
    import shlex
    import subprocess
    import sys

    config = by_kind(render("base"), "ConfigMap")["rps-config"]["data"]
    fake = {name.upper(): secrets.token_hex(16) for name in secret_policy.ROLE_SECRETS["airflow"]}
    for url in ("DATABASE_URL", "AIRFLOW_DATABASE_URL"):
        fake[url] = f"postgresql://svc:{secrets.token_hex(16)}@db.internal:5432/x"
    fake["AIRFLOW_JWT_SECRET"] = secrets.token_hex(32)
    env = {
        "PATH": os.environ["PATH"],
        "AIRFLOW_HOME": str(tmp_path),
        **config,
        **{e["name"]: e["value"] for e in values["env"]},
        **fake,
    }
    out = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "env_export.py"), "airflow"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    derived = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.stdout.splitlines())
    assert derived["AIRFLOW__CORE__EXECUTOR"] == values["executor"] == "KubernetesExecutor"
    # Task pods reach the api-server by its Service, under the /airflow/ path the proxy serves.
    assert derived["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/airflow/execution/"
    assert derived["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert derived["AIRFLOW__API__BASE_URL"] == values["config"]["api"]["base_url"]
    assert derived["AIRFLOW__CORE__AUTH_MANAGER"] == values["config"]["core"]["auth_manager"]
    assert derived["AIRFLOW__API_AUTH__JWT_SECRET"] == fake["AIRFLOW_JWT_SECRET"]
