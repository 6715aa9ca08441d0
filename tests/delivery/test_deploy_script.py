"""scripts/deploy.sh on the project's Docker Engine: a release whose health check fails is
replaced by the previous release automatically (what CI's deploy job runs on the host)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support import compose as c

pytestmark = [pytest.mark.compose]
DEPLOY = c.PROJECT_ROOT / "scripts" / "deploy.sh"
COMPOSE_FILE = """\
services:
  app:
    image: ${APP_IMAGE:?set APP_IMAGE}
    healthcheck:
      test: ["CMD", "test", "-e", "/healthy"]
      interval: 1s
      timeout: 2s
      retries: 2
"""


@pytest.fixture(scope="module")
def engine() -> dict[str, str]:
    env = c.docker_engine()
    images = c.base_images(env)
    # Two releases of a tiny image: the same command, one passes its health check, one never does.
    for tag, marker in (("good", "RUN touch /healthy\n"), ("bad", "")):
        dockerfile = f'FROM {images["PYTHON_IMAGE"]}\n{marker}CMD ["sleep", "infinity"]\n'
        subprocess.run(
            ["docker", "build", "-q", "-t", f"localhost/rps-deploytest:{tag}", "-"],
            input=dockerfile, env=env, check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    return env


def deploy(workdir: Path, env: dict[str, str], release: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), release],
        cwd=workdir,
        env={
            **env,
            "DEPLOY_COMPOSE_FILE": "compose.yml",
            "DEPLOY_ENV_FILE": "-",
            "DEPLOY_HEALTH_TIMEOUT": "12",
            "DEPLOY_POLL_S": "1",
            "DOCKER_COMPOSE": str(c.COMPOSE_BIN),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def running_image(workdir: Path, env: dict[str, str]) -> str:
    cid = subprocess.run(
        [str(c.COMPOSE_BIN), "-f", "compose.yml", "--env-file", "release.env", "ps", "-q", "app"],
        cwd=workdir, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.Image}}", cid], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_unhealthy_release_rolls_back_to_the_previous_one(engine: dict[str, str], tmp_path: Path) -> None:
    env = {**engine, "COMPOSE_PROJECT_NAME": f"rpsdeploy{uuid.uuid4().hex[:8]}"}
    (tmp_path / "compose.yml").write_text(COMPOSE_FILE)
    (tmp_path / "good.env").write_text("TAG=good\nAPP_IMAGE=localhost/rps-deploytest:good\n")
    (tmp_path / "bad.env").write_text("TAG=bad\nAPP_IMAGE=localhost/rps-deploytest:bad\n")
    try:
        first = deploy(tmp_path, env, "good.env")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "deployed good" in first.stdout
        assert running_image(tmp_path, env) == "localhost/rps-deploytest:good"

        second = deploy(tmp_path, env, "bad.env")
        assert second.returncode == 1, second.stdout + second.stderr
        assert "did not become healthy" in second.stderr and "rolled back to good" in second.stderr
        assert (tmp_path / "release.env").read_text() == (tmp_path / "good.env").read_text()
        assert running_image(tmp_path, env) == "localhost/rps-deploytest:good"

        # With nothing to go back to, a failed first deploy says so (exit 2) and stays failed.
        (tmp_path / "release.env").unlink()
        third = deploy(tmp_path, env, "bad.env")
        assert third.returncode == 2 and "no previous release" in third.stderr, third.stderr
    finally:
        subprocess.run(
            [str(c.COMPOSE_BIN), "-f", "compose.yml", "--env-file", "bad.env", "down", "-v", "--timeout", "1"],
            cwd=tmp_path, env=env, capture_output=True, timeout=120,
        )  # fmt: skip
