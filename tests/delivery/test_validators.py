"""The machine validators on the delivery files: the Compose specification, the GitHub Actions
schema, actionlint (with shellcheck when it is installed) and hadolint. No Docker engine needed."""

from __future__ import annotations

import subprocess

import pytest

from tests.delivery import specs
from tests.delivery.conftest import venv_tool


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=specs.ROOT, capture_output=True, text=True, timeout=120)


def test_compose_files_match_the_compose_specification() -> None:
    files = [str(p.relative_to(specs.ROOT)) for p in specs.COMPOSE_FILES]
    result = run(venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_matches_the_github_actions_schema() -> None:
    result = run(venv_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(specs.WORKFLOW))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint() -> None:
    result = run(venv_tool("actionlint"), "-no-color", str(specs.WORKFLOW.relative_to(specs.ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(specs.DOCKERFILES))
def test_hadolint(name: str) -> None:
    path = specs.DOCKERFILES[name].relative_to(specs.ROOT)
    result = run(venv_tool("hadolint"), "--failure-threshold", "error", "--no-color", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
