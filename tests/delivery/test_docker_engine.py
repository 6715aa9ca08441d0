"""scripts/docker_engine.sh: one daemon per machine, reused by every later call."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import compose as c

pytestmark = [pytest.mark.compose]


def test_start_reuses_the_running_daemon_with_overlay2() -> None:
    if os.environ.get("RPS_DOCKER_HOST"):
        pytest.skip("a runner's own Engine (RPS_DOCKER_HOST): the script starts none")
    first = c.docker_engine()
    info = subprocess.run(
        ["docker", "info", "--format", "{{.Driver}} {{.DockerRootDir}}"],
        env=first, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    directory = Path(os.environ.get("RPS_DOCKER_DIR", "/tmp/rps-docker"))
    assert first["DOCKER_HOST"] == f"unix://{directory}/docker.sock"
    assert info == ["overlay2", str(directory / "root")]
    pid = (directory / "pid").read_text().strip()
    again = c.docker_engine()
    assert again["DOCKER_HOST"] == first["DOCKER_HOST"]
    assert (directory / "pid").read_text().strip() == pid, "a second daemon was started"
    daemons = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    assert daemons == [pid], daemons
