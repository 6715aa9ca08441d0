"""The deployed stack's security model, read from docker-compose.deploy.yml and proxy/Caddyfile:
network segmentation, one published entrypoint, least-privilege secrets per service role.
(The Compose test on a real Engine proves the segmentation with a connection attempt.)"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.delivery import specs
from utils.secret_policy import ROLE_SECRETS

DATA_SERVICES = {"postgres", "mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor"}
# Environment names that hand a secret to a container, and the Settings field each one is.
SECRET_ENV = {
    "DATABASE_URL": "database_url",
    "AIRFLOW_DATABASE_URL": "airflow_database_url",
    "MLFLOW_DATABASE_URL": "mlflow_database_url",
    "ADMIN_TOKEN": "admin_token",
    "OPERATOR_TOKEN": "operator_token",
    "AIRFLOW_PASSWORD": "airflow_password",
    "AIRFLOW_ADMIN_PASSWORD": "airflow_admin_password",
    "AIRFLOW_JWT_SECRET": "airflow_jwt_secret",
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "MLFLOW_TRACKING_PASSWORD": "mlflow_tracking_password",
    "MLFLOW_ADMIN_PASSWORD": "mlflow_admin_password",
    "MLFLOW_READER_PASSWORD": "mlflow_reader_password",
    "MLFLOW_WRITER_PASSWORD": "mlflow_writer_password",
}


def networks(service: dict) -> set[str]:
    return set(service.get("networks", []))  # a list, or a mapping of names


def test_streamlit_shares_no_network_with_the_data_services(deploy: dict) -> None:
    svc = deploy["services"]
    assert networks(svc["streamlit"]) == {"public"}
    for name in DATA_SERVICES:
        assert not networks(svc["streamlit"]) & networks(svc[name]), name
    on_public = {n for n, s in svc.items() if "public" in networks(s)}
    assert on_public == {"proxy", "streamlit", "backend"}


def test_internal_networks_and_one_published_service(deploy: dict) -> None:
    nets = deploy["networks"]
    assert nets["app"]["internal"] is True and nets["ops"]["internal"] is True
    for name, service in deploy["services"].items():
        if name == "secrets-check":
            assert service["network_mode"] == "none"
            continue
        assert networks(service), f"{name} must name its networks (no default network)"
        if name != "proxy":
            assert "ports" not in service, name
    egress = {n for n, s in deploy["services"].items() if "egress" in networks(s)}
    assert egress == {"mlflow", "airflow-scheduler", "trainer"}, "only the S3 users reach out"


@pytest.mark.parametrize("role", ["backend", "airflow", "trainer", "mlflow", "frontend"])
def test_each_service_gets_exactly_its_roles_secrets(deploy: dict, role: str) -> None:
    holders = {n: s for n, s in deploy["services"].items() if s.get("environment", {}).get("SERVICE_ROLE") == role}
    assert holders, role
    for name, service in holders.items():
        env = service["environment"]
        assert env["ENVIRONMENT"] == "production", name
        given, needed = {SECRET_ENV[k] for k in env if k in SECRET_ENV}, set(ROLE_SECRETS[role])
        assert given <= needed, f"{name} holds secrets its role does not use: {given - needed}"
        assert given == needed, f"{name} misses {needed - given}"


def test_no_service_outside_its_role_holds_an_airflow_or_s3_secret(deploy: dict) -> None:
    for name in ("backend", "streamlit", "grafana", "prometheus", "proxy"):
        env = deploy["services"][name].get("environment", {})
        for key in ("AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLFLOW_WRITER_PASSWORD"):
            assert key not in env, f"{name} holds {key}"


def test_secrets_check_sees_every_secret_and_gates_the_start(deploy: dict) -> None:
    check = deploy["services"]["secrets-check"]
    assert check["command"] == ["python", "-m", "utils.secret_policy", "deploy"]
    given = " ".join(f"{k}={v}" for k, v in check["environment"].items())
    secret_vars = {r.name for r in specs.references(specs.COMPOSE_DEPLOY.read_text()) if r.required}
    secret_vars = {v for v in secret_vars if any(w in v for w in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY"))}
    assert secret_vars
    for var in secret_vars:
        assert f"${{{var}:?" in given, f"secrets-check does not see {var}"
    for name in ("postgres", "grafana"):
        assert deploy["services"][name]["depends_on"]["secrets-check"]["condition"] == "service_completed_successfully"


def test_the_caddyfile_validates_in_both_certificate_modes(tmp_path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("Debian's caddy is not installed (scripts/install.sh installs it)")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=rps.example.org",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    hashed = subprocess.run([caddy, "hash-password", "--plaintext", "x" * 24], capture_output=True, text=True).stdout
    for mode in ("acme", "files"):
        env = {
            **os.environ,
            "SITE_ADDRESS": "rps.example.org",
            "TLS_MODE": mode,
            "ACME_EMAIL": "ops@example.org",
            "TLS_CERT_FILE": str(cert),
            "TLS_KEY_FILE": str(key),
            "OPERATOR_PASSWORD_HASH": hashed.strip(),
            "XDG_DATA_HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
        }
        proc = subprocess.run(
            [caddy, "validate", "--config", str(specs.ROOT / "proxy" / "Caddyfile"), "--adapter", "caddyfile"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
