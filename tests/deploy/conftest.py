"""Fixtures for deploy/k8s: the manifests as kustomize renders them (deploy/k8s/render.sh, the
command an operator runs), and the names the project's code reads."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest
import yaml

from tests.support.procs import PROJECT_ROOT

K8S = PROJECT_ROOT / "deploy" / "k8s"
OVERLAYS = ("base", "overlays/production", "overlays/local")


@functools.cache
def render(kustomization: str) -> tuple[dict, ...]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with its built-in kustomize) is not on PATH: it renders deploy/k8s")
    out = subprocess.run(
        ["bash", str(K8S / "render.sh"), kustomization], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(docs: tuple[dict, ...], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.fixture(scope="session")
def settings_names() -> set[str]:
    """Environment variable names the project's Settings reads (upper-case field names)."""
    from utils.settings import Settings

    return {name.upper() for name in Settings.model_fields}


@pytest.fixture(scope="session")
def openapi_paths() -> set[str]:
    """The backend's routes from its OpenAPI schema; building the app touches no database."""
    from api.app import create_app
    from utils.settings import Settings

    return set(create_app(Settings(_env_file=None)).openapi()["paths"])
