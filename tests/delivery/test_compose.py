"""The Compose files' contract: services and ports, health-gated start-up, variables, image names,
health endpoints that exist, and the same entrypoints as the native stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.delivery import specs
from utils.settings import Settings

STACK = {
    "postgres": [5432],
    "airflow-init": [],
    "airflow-api-server": [8080],
    "airflow-scheduler": [],
    "airflow-dag-processor": [],
    "mlflow": [5000],
    "backend": [8000],
    "streamlit": [8501],
    "prometheus": [9090],
    "grafana": [3000],
    "trainer": [],
}
# `base` is built, never run: the shared Python environment the five images build FROM.
LOCAL_ONLY = {"minio": [9000, 9001], "minio-init": [], "base": []}
# The deployed stack's HTTPS entrypoint and its start-up check of the host's secrets
# (tests/delivery/test_deploy_security.py checks them).
DEPLOY_ONLY = {"proxy": [80, 443], "secrets-check": []}
ONE_SHOT = {"airflow-init", "minio-init", "trainer", "secrets-check", "base"}
STATEFUL = {
    "postgres": "/var/lib/postgresql/data",
    "minio": "/data",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
    "airflow-scheduler": "/opt/airflow/logs",
}
# Health endpoints of the third-party servers (the backend's come from its OpenAPI schema).
KNOWN_HEALTH = {
    "mlflow": {"/health"},
    "airflow": {"/api/v2/monitor/health", "/airflow/api/v2/monitor/health"},  # deployed under /airflow/
    "streamlit": {"/_stcore/health"},
    "prometheus": {"/-/healthy"},
    "grafana": {"/api/health", "/grafana/api/health"},  # deployed under /grafana/
}
PORT_OWNER = {8000: "backend", 5000: "mlflow", 8080: "airflow", 8501: "streamlit", 9090: "prometheus", 3000: "grafana"}
# Variables that are the tools' own (not the project's Settings): allowed by prefix.
TOOL_PREFIXES = ("AIRFLOW__", "MLFLOW_", "GF_", "POSTGRES_", "MINIO_", "AWS_", "STREAMLIT_SERVER_")
COMPOSE_ONLY_ENV = {"RPS_DB_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD"}
URL = re.compile(r"https?://[^\s'\"]+")
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")


def services(doc: dict, *, with_profiles: bool = True) -> dict[str, dict]:
    return {n: s for n, s in doc["services"].items() if with_profiles or not s.get("profiles")}


def published(service: dict) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) for each short-syntax port."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        ip = parts[0] if len(parts) == 3 else None
        out.append((ip, int(parts[-2]), int(parts[-1])))
    return out


def healthcheck_urls(test: list[str] | str) -> list[str]:
    text = " ".join(test) if isinstance(test, list) else test
    return URL.findall(text)


def has_healthcheck(service: dict) -> bool:
    hc = service.get("healthcheck") or {}
    return bool(hc.get("test")) and not hc.get("disable")


# ---------------------------------------------------------------- services and ports


def test_local_stack_services_and_ports(local: dict) -> None:
    expected = {**STACK, **LOCAL_ONLY}
    assert set(local["services"]) == set(expected)
    for name, ports in expected.items():
        got = published(local["services"][name])
        assert sorted(c for _, _, c in got) == ports, name
        for ip, host, container in got:
            assert ip == "127.0.0.1", f"{name}: {host} must bind 127.0.0.1 on a laptop"
            assert host == container, name


def test_deploy_publishes_only_the_https_proxy(deploy: dict) -> None:
    assert set(deploy["services"]) == set(STACK) | set(DEPLOY_ONLY)
    exposed = {n: published(s) for n, s in deploy["services"].items() if s.get("ports")}
    assert exposed == {"proxy": [(None, 80, 80), (None, 443, 443)]}
    for name, service in deploy["services"].items():
        assert service.get("network_mode") != "host", name
        assert "expose" not in service, name


def test_the_proxy_terminates_tls_in_front_of_plain_http_streamlit(deploy: dict) -> None:
    streamlit, proxy = deploy["services"]["streamlit"], deploy["services"]["proxy"]
    assert not any(k.startswith("STREAMLIT_SSL_") for k in streamlit["environment"])
    assert all(u.startswith("http://") for u in healthcheck_urls(streamlit["healthcheck"]["test"]))
    assert "./proxy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    caddyfile = (specs.ROOT / "proxy" / "Caddyfile").read_text()
    upstreams = re.findall(r"\{\$[A-Z]+_UPSTREAM:([a-z-]+):(\d+)\}", caddyfile)
    expected = {"streamlit", "backend", "airflow-api-server", "mlflow", "grafana", "prometheus"}
    assert {h for h, _ in upstreams} == expected
    for host, _ in upstreams:
        assert host in deploy["services"], f"the Caddyfile proxies to {host}, which is no service"


# ---------------------------------------------------------------- start-up order and health


@pytest.mark.parametrize("path", [specs.COMPOSE_LOCAL, specs.COMPOSE_DEPLOY], ids=lambda p: p.name)
def test_dependencies_wait_on_health_or_completion(path: Path) -> None:
    svc = specs.load_yaml(path)["services"]
    for name, service in svc.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions (long syntax)"
        for dep, spec in depends.items():
            condition = spec["condition"]
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}"
                assert has_healthcheck(svc[dep]), f"{dep} is depended on but has no healthcheck"


@pytest.mark.parametrize("path", [specs.COMPOSE_LOCAL, specs.COMPOSE_DEPLOY], ids=lambda p: p.name)
def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy(path: Path) -> None:
    for name, service in specs.load_yaml(path)["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        assert has_healthcheck(service), name
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_stateful_services_keep_their_data_in_named_volumes(local: dict, deploy: dict) -> None:
    for doc in (local, deploy):
        declared = set(doc["volumes"])
        for name, target in STATEFUL.items():
            if name not in doc["services"]:
                continue
            mounts = {v.split(":")[1]: v.split(":")[0] for v in doc["services"][name]["volumes"]}
            assert mounts.get(target) in declared, f"{name}: {target} is not a named volume"


def test_deploy_has_resource_limits_and_bounded_logs(deploy: dict) -> None:
    for name, service in deploy["services"].items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory") and limits.get("cpus"), f"{name}: no resource limits"
        assert service.get("logging", {}).get("options", {}).get("max-size"), f"{name}: unbounded logs"


def test_healthchecks_hit_endpoints_that_exist(local: dict, deploy: dict, openapi_paths: set[str]) -> None:
    """Every health URL, in Compose and in the Dockerfiles, names a real endpoint of its server."""
    checks: list[tuple[str, str]] = []
    for doc in (local, deploy):
        for name, service in doc["services"].items():
            if has_healthcheck(service):
                checks += [(name, u) for u in healthcheck_urls(service["healthcheck"]["test"])]
    for name, path in specs.DOCKERFILES.items():
        for ins in specs.parse_dockerfile(path).final.all("HEALTHCHECK"):
            checks += [(name, u) for u in URL.findall(ins.args.replace("scheme + '", "http"))]
    assert checks
    seen_backend = False
    for service, url in checks:
        match = re.match(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s]*)", url)
        assert match, f"{service}: health URL {url} must target the container itself"
        port, route = int(match.group(1)), match.group(2)
        owner = PORT_OWNER[port]
        assert service.startswith(owner), f"{service} checks port {port}, which is {owner}'s"
        if owner == "backend":
            seen_backend = True
            assert route in openapi_paths, f"{service}: {route} is not in the backend's OpenAPI schema"
        else:
            assert route in KNOWN_HEALTH[owner], f"{service}: {route}"
    assert seen_backend


# ---------------------------------------------------------------- variables


def test_local_variables_are_defined_in_dotenv_or_defaulted(dotenv: dict[str, str]) -> None:
    for path in (specs.COMPOSE_LOCAL, specs.COMPOSE_BUILD):
        for ref in specs.references(path.read_text()):
            assert ref.name in dotenv or ref.has_default or ref.required, f"{path.name}: ${{{ref.name}}} is undefined"


def test_deploy_secrets_are_required_with_a_message() -> None:
    refs = specs.references(specs.COMPOSE_DEPLOY.read_text())
    assert refs
    for ref in refs:
        assert ref.required or ref.has_default, f"${{{ref.name}}} needs :? or a default"
        if ref.required:
            assert ref.op == ":?" and ref.arg.strip(), f"${{{ref.name}}}: say what to set"
        if SECRET.search(ref.name):
            assert ref.required, f"{ref.name} is a secret: it must be required, never defaulted"
    required = ("REGISTRY", "IMAGE_PREFIX", "BACKEND_DIGEST", "ADMIN_TOKEN", "POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET")
    for name in required:
        assert any(r.name == name and r.required for r in refs), name


def test_no_secret_value_is_written_in_a_compose_file() -> None:
    setting = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*:\s*(\S.*)$")
    for path in specs.COMPOSE_FILES:
        for line in path.read_text().splitlines():
            match = setting.match(line)
            if match and SECRET.search(match.group(1)):
                assert "${" in match.group(2), f"{path.name}: {line.strip()}"


def _project_services(doc: dict) -> dict[str, dict]:
    """The services that run one of the five project images (not the build-only base)."""
    return {n: s for n, s in doc["services"].items() if "IMAGE_PREFIX" in s.get("image", "") and n != "base"}


@pytest.mark.parametrize("path", [specs.COMPOSE_LOCAL, specs.COMPOSE_DEPLOY], ids=lambda p: p.name)
def test_project_containers_get_settings_names(
    path: Path, settings_names: set[str], dockerfiles: dict[str, specs.Dockerfile]
) -> None:
    """One set of names: what Compose hands the project's code is a Settings field, a tool's own
    variable, or one its entrypoint script reads (the same script `make up` runs)."""
    for name, service in _project_services(specs.load_yaml(path)).items():
        if name == "minio-init":
            continue
        scripts = " ".join(
            (specs.ROOT / w.removeprefix("/app/")).read_text()
            for w in specs.effective_command(service, _dockerfile_of(service, dockerfiles))
            if w.endswith(".sh") and (specs.ROOT / w.removeprefix("/app/")).is_file()
        )
        for key in service.get("environment", {}):
            ok = key in settings_names or key.startswith(TOOL_PREFIXES) or key in COMPOSE_ONLY_ENV or key in scripts
            assert ok, f"{name}: {key} is neither a Settings field, a tool's variable nor read by its entrypoint"


def _dockerfile_of(service: dict, dockerfiles: dict[str, specs.Dockerfile]) -> specs.Dockerfile:
    found = [df for name, df in dockerfiles.items() if re.search(rf"-{name}[:@]", service["image"])]
    assert len(found) == 1, f"{service['image']} is none of the images docker-compose.build.yml builds"
    return found[0]


def test_local_and_deploy_wire_the_backend_the_same_way(local: dict, deploy: dict) -> None:
    lenv, denv = local["services"]["backend"]["environment"], deploy["services"]["backend"]["environment"]
    assert set(lenv) <= set(denv)
    for key in ("BACKEND_URL", "MLFLOW_TRACKING_URI", "MODEL_SOURCE", "BACKEND_HOST", "BACKEND_PORT"):
        assert lenv[key] == denv[key], key
    # Deployed, Airflow serves everything under /airflow/ (its UI behind the HTTPS proxy).
    assert denv["AIRFLOW_URL"] == lenv["AIRFLOW_URL"].rstrip("/") + "/airflow"
    assert denv["ENVIRONMENT"] == "production"
    assert local["services"]["backend"]["environment"]["BACKEND_HOST"] == "0.0.0.0"


def test_mlflow_answers_the_compose_service_name() -> None:
    """MLflow refuses Host headers it does not know (403) while /health still passes."""
    for path in (specs.COMPOSE_LOCAL, specs.COMPOSE_DEPLOY):
        allowed = specs.load_yaml(path)["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
        assert {"mlflow", "mlflow:5000"} <= set(allowed.split(",")), path.name


def test_postgres_init_is_the_same_everywhere(local: dict, deploy: dict) -> None:
    script = local["configs"]["postgres-init"]["content"]
    assert script == deploy["configs"]["postgres-init"]["content"]
    for db in ("rps", "airflow", "mlflow"):
        assert f"CREATE DATABASE {db} OWNER {db};" in script
        assert f"@postgres:5432/{db}" in specs.COMPOSE_LOCAL.read_text()


# ---------------------------------------------------------------- images


def test_build_tags_every_image_as_deploy_pulls_it(build: dict, local: dict, deploy: dict) -> None:
    built = {}
    for name, service in build["services"].items():
        image = specs.strip_interpolation(service["image"])
        if name == "base":
            assert image == "${REGISTRY}/${IMAGE_PREFIX}-base:${BASE_TAG}"
            assert service["build"]["dockerfile"] == "Dockerfile.base"
            continue
        assert image == f"${{REGISTRY}}/${{IMAGE_PREFIX}}-{name}:${{TAG}}", name
        built[image] = service["build"]["dockerfile"]
    assert set(built.values()) == {str(p.relative_to(specs.ROOT)) for p in specs.DOCKERFILES.values()}
    # The deploy file pulls the same repositories, by the digest CI recorded after the push.
    pulled = {}
    for name, service in _project_services(deploy).items():
        repo, _, digest = specs.strip_interpolation(service["image"]).partition("@")
        expected = f"${{{repo.rsplit('-', 1)[1].upper()}_DIGEST}}"
        assert digest == expected, f"{name}: {service['image']} is not pulled by digest"
        pulled[repo] = name
        assert "build" not in service
    assert set(pulled) == {image.removesuffix(":${TAG}") for image in built}
    # The local file builds each image from the same Dockerfile, under the same name pattern.
    for name, service in _project_services(local).items():
        image = specs.strip_interpolation(service["image"])
        assert image in built, f"{name}: {image}"
        if "build" in service:
            assert service["build"]["dockerfile"] == built[image], name
            assert service["build"]["context"] == "."


def test_every_image_builds_from_the_shared_base(build: dict, local: dict) -> None:
    """BASE_IMAGE names the base image each file builds first (Dockerfile.base)."""
    base = {
        "docker-compose.build.yml": "${REGISTRY}/${IMAGE_PREFIX}-base:${BASE_TAG}",
        "docker-compose.yml": "${REGISTRY}/${IMAGE_PREFIX}-base:${BASE_TAG}",
    }
    for label, doc in (("docker-compose.build.yml", build), ("docker-compose.yml", local)):
        assert specs.strip_interpolation(doc["services"]["base"]["image"]) == base[label]
        for name, service in doc["services"].items():
            if "build" in service and name != "base":
                arg = service["build"].get("args", {}).get("BASE_IMAGE")
                assert arg and specs.strip_interpolation(arg) == base[label], f"{label}: {name}"


def test_weights_build_arguments_reach_the_images_that_use_them(build: dict, local: dict) -> None:
    for doc in (build, local):
        for name, service in doc["services"].items():
            if "build" not in service:
                continue
            dockerfile = specs.parse_dockerfile(specs.ROOT / service["build"]["dockerfile"])
            takes = "BACKBONE_WEIGHTS_SOURCE" in dockerfile.global_args
            given = "BACKBONE_WEIGHTS_SOURCE" in service["build"].get("args", {})
            assert takes == given, name


# ---------------------------------------------------------------- same commands as the native stack


def _native_command(words: list[str]) -> list[str]:
    """The module or script a container runs, as `make up` would name it."""
    words = [w.removeprefix("/app/") for w in words]
    if words[:2] == ["sh", "-c"]:
        return [part.strip() for part in words[2].split("&&")]
    return [" ".join(words)]


@pytest.mark.parametrize("path", [specs.COMPOSE_LOCAL, specs.COMPOSE_DEPLOY], ids=lambda p: p.name)
def test_containers_run_the_native_entrypoints(path: Path, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    native = specs.native_scripts_text()
    for name, service in _project_services(specs.load_yaml(path)).items():
        if name in ("minio-init", "secrets-check"):  # no native counterpart: Compose-only one-offs
            continue
        for command in _native_command(specs.effective_command(service, _dockerfile_of(service, dockerfiles))):
            program, *args = command.split()
            if program == "python":
                module = " ".join(args).removeprefix("-m ")
                module = module.replace("--dvc", "").strip()
                assert module.split()[0] in native, f"{name}: `make up` never runs {module}"
            else:
                script = specs.ROOT / program
                assert script.is_file(), f"{name} runs {program}, which does not exist yet"
                assert program in native, f"{name}: `make up` does not run {program}"
                for arg in args:
                    lines = [ln for ln in native.splitlines() if program in ln and arg in ln]
                    assert lines, f"{name}: `make up` never runs {program} {arg}"


# ---------------------------------------------------------------- mounted monitoring configuration


def test_prometheus_scrapes_compose_service_names(local: dict) -> None:
    mounts = dict(v.split(":")[:2][::-1] for v in local["services"]["prometheus"]["volumes"] if v.startswith("./"))
    config_path = specs.ROOT / mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    names = set(local["services"])
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                if host == "localhost":
                    assert int(port) == 9090
                    continue
                assert host in names, f"{config_path.name}: {target} is not a Compose service"
                assert int(port) in [c for _, _, c in published(local["services"][host])], target
    for pattern in config.get("rule_files", []):
        folder = pattern.split("/")[0]
        assert f"/etc/prometheus/{folder}" in mounts, f"rule files {pattern} are not mounted"
        assert list((config_path.parent).glob(pattern)), f"no rule files match {pattern}"


def test_grafana_dashboard_provider_reads_the_mounted_folder(local: dict) -> None:
    mounts = dict(v.split(":")[:2][::-1] for v in local["services"]["grafana"]["volumes"] if v.startswith("./"))
    providers = specs.ROOT / "monitoring" / "grafana" / "provisioning" / "dashboards"
    files = sorted(providers.glob("*.y*ml"))
    if not files:
        pytest.skip("no Grafana dashboard provider yet (monitoring/grafana/provisioning/dashboards/)")
    for file in files:
        for provider in yaml.safe_load(file.read_text()).get("providers", []):
            assert provider["options"]["path"] in mounts, f"{file.name}: {provider['options']['path']}"


# ---------------------------------------------------------------- the CeleryExecutor layer


def _celery_merged() -> dict[str, dict]:
    """docker-compose.yml with docker-compose.celery.yml on top, as Compose resolves them."""
    compose = Path(sys.executable).parent / "docker-compose"
    args = [str(compose), "-f", "docker-compose.yml", "-f", "docker-compose.celery.yml", "--profile", "train"]
    args += ["config", "--format", "json"]
    out = subprocess.run(args, cwd=specs.ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)["services"]


def test_the_celery_layer_adds_a_private_broker_and_two_kinds_of_worker(settings_names: set[str]) -> None:
    layer = specs.load_yaml(specs.COMPOSE_CELERY)["services"]
    assert {"redis", "airflow-worker", "airflow-worker-training"} <= set(layer)
    assert not any(s.get("ports") or s.get("expose") for s in layer.values()), "the broker stays inside the network"
    merged = _celery_merged()
    assert not merged["redis"].get("ports")
    default = Settings(_env_file=None)
    for name in ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-worker", "airflow-worker-training"):  # fmt: skip
        env = merged[name]["environment"]
        assert env["AIRFLOW_EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW_CELERY_BROKER_URL"] == "redis://redis:6379/0", name
        for key in env:
            assert key in settings_names or key.startswith(TOOL_PREFIXES) or key in COMPOSE_ONLY_ENV, (name, key)
    for name in ("airflow-scheduler", "airflow-worker", "airflow-worker-training"):
        assert merged[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    for name in ("redis", "airflow-worker", "airflow-worker-training"):
        assert has_healthcheck(merged[name]) and merged[name]["restart"] == "unless-stopped", name
    # The Airflow image takes the default queue; the training image (the trainer's) the training one.
    worker, training = merged["airflow-worker"], merged["airflow-worker-training"]
    assert worker["image"] == merged["airflow-scheduler"]["image"] and worker["command"] == ["celery-worker", "default"]
    assert training["image"] == merged["trainer"]["image"]
    assert training["build"]["dockerfile"] == merged["trainer"]["build"]["dockerfile"] == "src/Dockerfile.src"
    assert training["build"]["args"] == merged["trainer"]["build"]["args"]
    assert training["entrypoint"] == ["/app/airflow/entrypoint.sh"]
    assert training["command"] == ["celery-worker", default.training_queue]
    # Both workers share the scheduler's volumes: the DAG's stages hand over through the workspace.
    assert worker["volumes"] == training["volumes"] == merged["airflow-scheduler"]["volumes"]
