"""deploy/k8s as kustomize renders it: valid against the Kubernetes schemas (offline, with
`kubernetes-validate`), and wired the way the product needs to run on a cluster: the images
docker-compose.build.yml builds, probes on the backend's real /ready and /health, resources
the HorizontalPodAutoscaler can measure, no secret in any file, and every setting by the name
utils/settings.py reads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import K8S, OVERLAYS, by_kind, containers, render
from tests.support.procs import PROJECT_ROOT
from utils import secret_policy

# The oldest Kubernetes still in standard support on the big clouds, and the newest bundled.
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
PROJECT_DEPLOYMENTS = ("backend", "streamlit", "mlflow")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|DATABASE_URL")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@'\"]+:[^@\s/'\"]+@")
TOOL_PREFIXES = ("MLFLOW_", "AWS_", "AIRFLOW__")
# What each project image's entrypoint reads besides Settings (the scripts `make up` runs).
ENTRYPOINT_SCRIPTS = ("frontend/entrypoint.sh", "mlflow/entrypoint.sh", "scripts/env_export.py")
CADDY_VARS = re.compile(r"\{\$([A-Z_]+)(:[^}]*)?\}")


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _build_images(env: dict[str, str]) -> dict[str, str]:
    """service -> image name as docker-compose.build.yml tags it, its ${VARS} from `env`."""
    doc = yaml.safe_load((PROJECT_ROOT / "docker-compose.build.yml").read_text())
    return {n: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: env[m[1]], s["image"]) for n, s in doc["services"].items()}


def _env_names(container: dict) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def _role(container: dict) -> str | None:
    return next((e["value"] for e in container.get("env", []) if e["name"] == "SERVICE_ROLE"), None)


@pytest.mark.parametrize("kustomization", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_manifest_is_valid_kubernetes(kustomization: str, version: str) -> None:
    docs = render(kustomization)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds
    assert set(by_kind(docs, "Deployment")) == {"backend", "streamlit", "mlflow", "proxy"}
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} in {kustomization} (Kubernetes {version}): {exc}")


def test_images_are_the_ones_the_build_file_produces() -> None:
    dotenv = _env_file(PROJECT_ROOT / ".env")
    local = _build_images(dotenv)
    for name, deployment in by_kind(render("overlays/local"), "Deployment").items():
        if name in PROJECT_DEPLOYMENTS:
            assert [c["image"] for c in containers(deployment)] == [local[name]], name

    # Production: one registry and prefix for all, each image the build file's service of that name.
    prefixes = set()
    for name, deployment in by_kind(render("overlays/production"), "Deployment").items():
        if name not in PROJECT_DEPLOYMENTS:
            continue
        [image] = [c["image"] for c in containers(deployment)]
        match = re.fullmatch(r"(?P<prefix>[^:@]+)-(?P<service>[a-z]+)(:[\w][\w.-]*|@sha256:[0-9a-f]{64})", image)
        assert match and match["service"] == name and name in local, image
        prefixes.add(match["prefix"])
    assert len(prefixes) == 1, prefixes

    # The proxy runs the Caddy image the EC2 host runs.
    deploy = yaml.safe_load((PROJECT_ROOT / "docker-compose.deploy.yml").read_text())
    for kustomization in OVERLAYS:
        [proxy] = containers(by_kind(render(kustomization), "Deployment")["proxy"])
        assert proxy["image"] == deploy["services"]["proxy"]["image"]


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_backend_probes_are_ready_and_health(kustomization: str, openapi_paths: set[str]) -> None:
    [backend] = containers(by_kind(render(kustomization), "Deployment")["backend"])
    assert backend["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert backend["livenessProbe"]["httpGet"]["path"] == "/health"
    assert backend["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"/ready", "/health"} <= openapi_paths
    ports = {p["name"] for p in backend["ports"]}
    assert {backend[p]["httpGet"]["port"] for p in ("readinessProbe", "livenessProbe", "startupProbe")} <= ports
    for name, deployment in by_kind(render(kustomization), "Deployment").items():
        for c in containers(deployment):
            assert "readinessProbe" in c and "livenessProbe" in c, f"{name}/{c['name']} has no probes"


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_the_autoscaler_can_measure_the_backend(kustomization: str) -> None:
    docs = render(kustomization)
    deployments = by_kind(docs, "Deployment")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["backend"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"}
    [metric] = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # Utilisation is usage / requests: without a CPU request on every container there is no metric.
    for name, deployment in deployments.items():
        for c in containers(deployment):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}/{c['name']} lacks {kind}"
    if kustomization == "overlays/production":
        assert hpa["minReplicas"] >= 2  # a node or zone can go without the API going with it


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_services_reach_their_pods(kustomization: str) -> None:
    docs = render(kustomization)
    deployments = by_kind(docs, "Deployment")
    for name, service in by_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        matching = [
            d for d in deployments.values() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, name
        ports = {p["name"] for c in containers(matching[0]) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name

    # The proxy's upstreams are these Services on their ports; Airflow's is the URL the backend uses.
    services = {n: {p["port"] for p in s["spec"]["ports"]} for n, s in by_kind(docs, "Service").items()}
    [proxy] = containers(deployments["proxy"])
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    for upstream in ("BACKEND", "STREAMLIT", "MLFLOW"):
        host, port = env[f"{upstream}_UPSTREAM"].split(":")
        assert int(port) in services[host], upstream
    config = by_kind(docs, "ConfigMap")["rps-config"]["data"]
    assert config["AIRFLOW_URL"].startswith(f"http://{env['AIRFLOW_UPSTREAM']}/")
    assert config["BACKEND_URL"] == f"http://backend:{next(iter(services['backend']))}"
    assert config["MLFLOW_TRACKING_URI"] == f"http://mlflow:{next(iter(services['mlflow']))}"


def test_no_secret_is_written_in_any_manifest() -> None:
    files = [p for p in K8S.rglob("*") if p.is_file()]
    texts = {p: p.read_text() for p in files}
    dev_secrets = {v for k, v in _env_file(PROJECT_ROOT / ".env").items() if SECRET_NAME.search(k) and len(v) >= 8}
    for path, text in texts.items():
        assert not CREDENTIALS_IN_URL.search(text), f"{path}: a URL with a password"
        assert not [s for s in dev_secrets if s in text], f"{path} holds a value of .env's secrets"
    for kustomization in OVERLAYS:
        docs = render(kustomization)
        assert not by_kind(docs, "Secret"), "Secrets are created out of band, never rendered from these files"
        for name, config in by_kind(docs, "ConfigMap").items():
            assert not [k for k in config.get("data", {}) if SECRET_NAME.search(k)], name
        for name, deployment in by_kind(docs, "Deployment").items():
            for c in containers(deployment):
                literal = [e["name"] for e in c.get("env", []) if "value" in e and SECRET_NAME.search(e["name"])]
                assert not literal, f"{name}: {literal} written as literal values"


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_each_service_gets_its_roles_secret_and_settings_names(kustomization: str, settings_names: set[str]) -> None:
    docs = render(kustomization)
    config = by_kind(docs, "ConfigMap")["rps-config"]["data"]
    assert set(config) <= settings_names, set(config) - settings_names
    scripts = " ".join((PROJECT_ROOT / s).read_text() for s in ENTRYPOINT_SCRIPTS)
    deployments = by_kind(docs, "Deployment")
    for name in PROJECT_DEPLOYMENTS:
        [c] = containers(deployments[name])
        role = _role(c)
        assert role in secret_policy.ROLE_SECRETS, f"{name}: SERVICE_ROLE {role!r}"
        secret_refs = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
        # Exactly its role's Secret (utils/secret_policy.py ROLE_SECRETS), none for a role without.
        assert secret_refs == ([f"rps-{role}-secrets"] if secret_policy.ROLE_SECRETS[role] else []), name
        assert [s["configMapRef"]["name"] for s in c["envFrom"] if "configMapRef" in s] == ["rps-config"]
        for key in _env_names(c):
            ok = key in settings_names or key.startswith(TOOL_PREFIXES) or re.search(rf"\b{key}\b", scripts)
            assert ok, f"{name}: {key} is neither a Settings field, a tool's variable nor read by its entrypoint"
        assert "ENVIRONMENT" not in _env_names(c) and config["ENVIRONMENT"] == "production"


def test_the_proxy_gets_every_variable_the_caddyfile_reads() -> None:
    caddyfile = (PROJECT_ROOT / "proxy" / "Caddyfile").read_text()
    read = {m[1]: m[2] is not None for m in CADDY_VARS.finditer(caddyfile)}  # name -> has a default
    for kustomization in OVERLAYS:
        docs = render(kustomization)
        proxy = by_kind(docs, "Deployment")["proxy"]
        [c] = containers(proxy)
        names = set(_env_names(c)) - {"XDG_DATA_HOME", "XDG_CONFIG_HOME"}
        assert names <= set(read), names - set(read)
        command = " ".join(c["command"])
        provided = names | ({"OPERATOR_PASSWORD_HASH"} if "OPERATOR_PASSWORD_HASH=" in command else set())
        needed = {n for n, has_default in read.items() if not has_default} - {"ACME_EMAIL"}  # acme mode only
        assert needed <= provided, needed - provided
        assert "$OPS_PROXY_PASSWORD" in command
        assert [s["secretRef"]["name"] for s in c["envFrom"]] == ["rps-proxy-secrets"]
        # The Caddyfile is the repository's, byte for byte.
        [caddy_config] = [m for n, m in by_kind(docs, "ConfigMap").items() if n.startswith("rps-proxy-caddyfile")]
        assert caddy_config["data"]["Caddyfile"] == caddyfile
        volumes = {v["name"]: v for v in proxy["spec"]["template"]["spec"]["volumes"]}
        assert volumes["caddyfile"]["configMap"]["name"] == caddy_config["metadata"]["name"]
        assert volumes["tls"]["secret"]["secretName"] == "rps-tls"


# Pods that are not in these manifests but talk to them: Airflow's (the chart labels every pod
# tier=airflow) and Prometheus in the monitoring namespace.
OUTSIDE_PODS = {"airflow": ({"tier": "airflow"}, "rps"), "prometheus": ({"app": "prometheus"}, "monitoring")}


def _peers_allowed(rules: list[dict], pods: dict[str, tuple[dict, str]]) -> set[str]:
    """Which of `pods` (name -> (labels, namespace)) some rule's peer selects (same namespace: rps)."""
    allowed = set()
    for rule in rules:
        for peer in rule.get("from", rule.get("to", [])):
            if "ipBlock" in peer:
                continue  # addresses, not pods: the test checks them itself (pod networks are private)
            for name, (labels, namespace) in pods.items():
                ns_ok = (
                    peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
                    if "namespaceSelector" in peer
                    else namespace == "rps"
                )
                pod_ok = peer.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items()
                if ns_ok and pod_ok:
                    allowed.add(name)
    return allowed


def test_network_policies_keep_streamlit_to_the_backend() -> None:
    """The EC2 host's network rules on a cluster: Streamlit talks to the backend only; the
    backend and MLflow accept only the pods that need them (docs/deploy.md, "Security model")."""
    docs = render("overlays/production")
    deployments = by_kind(docs, "Deployment")
    pods = {n: (d["spec"]["template"]["metadata"]["labels"], "rps") for n, d in deployments.items()} | OUTSIDE_PODS
    policies = {}
    for name, policy in by_kind(docs, "NetworkPolicy").items():
        [target] = [
            n
            for n, (labels, _) in pods.items()
            if policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        policies[target] = policy["spec"]
        ports = {p["containerPort"] for c in containers(deployments[target]) for p in c["ports"]}
        assert {p["port"] for r in policy["spec"].get("ingress", []) for p in r["ports"]} == ports, name
    assert set(policies) == {"streamlit", "backend", "mlflow"}  # the proxy is the public entrypoint
    assert _peers_allowed(policies["streamlit"]["ingress"], pods) == {"proxy"}
    assert _peers_allowed(policies["backend"]["ingress"], pods) == {"proxy", "streamlit", "airflow", "prometheus"}
    assert _peers_allowed(policies["mlflow"]["ingress"], pods) == {"backend", "airflow", "proxy"}
    # Streamlit's way out: the backend's port, DNS and public addresses (WebRTC), no private
    # address: not PostgreSQL (RDS), not MLflow or Airflow, not the metadata endpoint.
    assert policies["streamlit"]["policyTypes"] == ["Ingress", "Egress"]
    backend, dns, public = policies["streamlit"]["egress"]
    assert _peers_allowed([backend], pods) == {"backend"} and [p["port"] for p in backend["ports"]] == [8000]
    [dns_peer] = dns["to"]
    assert dns_peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert _peers_allowed([dns, public], pods) == set()
    [block] = public["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0" and "ports" not in public
    assert set(block["ipBlock"]["except"]) == {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}


def _role_secrets(role: str) -> dict[str, str]:
    """Strong random stand-ins for a role's Secret, keyed as the Secret's keys are."""
    import secrets

    out = {name.upper(): secrets.token_hex(16) for name in secret_policy.ROLE_SECRETS[role]}
    for key in out:
        if key.endswith("DATABASE_URL"):
            out[key] = f"postgresql://svc:{secrets.token_hex(16)}@db.internal:5432/x"
    return out


@pytest.mark.parametrize("name", PROJECT_DEPLOYMENTS)
def test_each_containers_settings_load_in_production(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a pod gets (the ConfigMap, its own env, its role's Secret) is one the
    settings accept with ENVIRONMENT=production: every value parses, no secret is missing."""
    from utils.settings import Settings

    docs = render("overlays/production")
    [c] = containers(by_kind(docs, "Deployment")[name])
    env = {**by_kind(docs, "ConfigMap")["rps-config"]["data"], **{e["name"]: e["value"] for e in c["env"]}}
    env |= _role_secrets(_role(c))
    for key in [k for k in os.environ if k.upper() in {f.upper() for f in Settings.model_fields}]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings(_env_file=None)
    assert s.environment == "production" and s.service_role == _role(c)
    if name == "backend":
        assert (s.backend_host, s.backend_port, s.backend_workers) == ("0.0.0.0", 8000, 1)
        assert s.model_source == "mlflow" and s.mlflow_tracking_uri == "http://mlflow:5000"
        assert s.mlflow_tracking_username == "rps-reader" and s.trusted_proxies
    if name == "mlflow":
        assert s.mlflow_auth and s.mlflow_artifacts_destination.startswith("s3://")


# Pod Security Standards "restricted" (the production namespace enforces it): what admission checks.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
}
RESTRICTED_VOLUMES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI"}


@pytest.mark.parametrize("kustomization", ("overlays/production", "overlays/local"))
def test_every_pod_passes_the_restricted_pod_security_standard(kustomization: str) -> None:
    docs = render(kustomization)
    [namespace] = by_kind(docs, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot") is True and security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert {s["name"] for s in security.get("sysctls", [])} <= SAFE_SYSCTLS, name
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, f"{name}: volume {volume['name']}"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for c in containers(deployment):
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, f"{name}/{c['name']}"
            assert not sc.get("privileged") and not c.get("ports", [{}])[0].get("hostPort"), f"{name}/{c['name']}"


def test_caddy_accepts_the_proxy_pods_configuration(tmp_path: Path) -> None:
    """Debian's Caddy (the version differs from the image's, the config language does not)
    validates the rendered Caddyfile with the proxy container's environment; only the TLS files
    are a throwaway pair here, as cert-manager would mount them."""
    import shutil
    import subprocess

    from tests.support.https_proxy import self_signed

    caddy = shutil.which("caddy")
    assert caddy, "Debian's caddy is not on PATH; `make install` (scripts/install.sh) installs it"
    docs = render("overlays/production")
    [c] = containers(by_kind(docs, "Deployment")["proxy"])
    [caddy_config] = [m for n, m in by_kind(docs, "ConfigMap").items() if n.startswith("rps-proxy-caddyfile")]
    (tmp_path / "Caddyfile").write_text(caddy_config["data"]["Caddyfile"])
    cert, key = self_signed(tmp_path)
    env = {e["name"]: e["value"] for e in c["env"]}
    env |= {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}
    env |= {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    hashed = subprocess.run(
        [caddy, "hash-password", "--plaintext", "a-throwaway-login-1"], capture_output=True, text=True, check=True
    )
    env["OPERATOR_PASSWORD_HASH"] = hashed.stdout.strip()
    out = subprocess.run(
        [caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "Valid configuration" in out.stdout + out.stderr, out.stderr[-2000:]
