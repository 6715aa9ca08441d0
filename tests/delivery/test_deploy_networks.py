"""docker-compose.deploy.yml's networks on the project's real Docker Engine: each deployed
service is stood in by a small container listening on its port, joined to exactly the networks
the deploy file gives it, and real connection attempts (by name and by address) show what the
Streamlit container can and cannot reach."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.delivery import specs
from tests.support import compose as c

pytestmark = [pytest.mark.compose]

PORTS = {
    "proxy": 443,
    "streamlit": 8501,
    "backend": 8000,
    "postgres": 5432,
    "mlflow": 5000,
    "airflow-api-server": 8080,
    "prometheus": 9090,
    "grafana": 3000,
}


class Topology:
    def __init__(self, env: dict[str, str], file: Path, name: str) -> None:
        self.env, self.file, self.name = env, file, name

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(c.COMPOSE_BIN), "-p", self.name, "-f", str(self.file), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=check,
        )

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def addresses(self, service: str) -> list[str]:
        info = c.inspect_json(self.env, "inspect", self.container(service))[0]
        return [n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n["IPAddress"]]

    def reaches(self, source: str, host: str, port: int) -> bool:
        """A TCP connection from inside `source`; `docker exec` passes the exit status on."""
        code = f"import socket; socket.create_connection(({host!r}, {port}), 3).close()"
        args = ["docker", "exec", self.container(source), "python", "-c", code]
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        return proc.returncode == 0


@pytest.fixture(scope="module")
def topology(tmp_path_factory) -> Iterator[Topology]:
    env = c.docker_engine()
    image = c.base_images(env)["PYTHON_IMAGE"]
    deploy = specs.load_yaml(specs.COMPOSE_DEPLOY)
    services = {
        name: {
            "image": image,
            "command": ["python", "-m", "http.server", str(port)],
            "networks": sorted(deploy["services"][name]["networks"]),
        }
        for name, port in PORTS.items()
    }
    file = tmp_path_factory.mktemp("deploy-networks") / "compose.yml"
    file.write_text(yaml.safe_dump({"services": services, "networks": deploy["networks"]}))
    topo = Topology(env, file, f"rpsnet{uuid.uuid4().hex[:8]}")
    try:
        topo.compose("up", "-d", "--wait", "--wait-timeout", "120")
        yield topo
    finally:
        topo.compose("down", "-v", "--timeout", "5", check=False)


def test_streamlit_reaches_the_backend_and_the_proxy_only(topology: Topology) -> None:
    assert topology.reaches("streamlit", "backend", PORTS["backend"])
    assert topology.reaches("streamlit", "proxy", PORTS["proxy"])
    for target in ("postgres", "mlflow", "airflow-api-server", "prometheus", "grafana"):
        assert not topology.reaches("streamlit", target, PORTS[target]), f"streamlit reached {target} by name"
        for address in topology.addresses(target):
            assert not topology.reaches("streamlit", address, PORTS[target]), f"streamlit reached {target} at {address}"


def test_the_proxy_and_the_backend_reach_what_they_serve(topology: Topology) -> None:
    for target in ("streamlit", "backend", "mlflow", "airflow-api-server", "prometheus", "grafana"):
        assert topology.reaches("proxy", target, PORTS[target]), f"the proxy cannot reach {target}"
    assert not topology.reaches("proxy", "postgres", PORTS["postgres"])
    for target in ("postgres", "mlflow", "airflow-api-server"):
        assert topology.reaches("backend", target, PORTS[target]), f"the backend cannot reach {target}"
