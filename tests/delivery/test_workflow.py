"""The pipeline's contract, read from .github/workflows/cicd.yml."""

from __future__ import annotations

import re

from tests.delivery import specs

JOBS = {"test", "validate", "data", "build-and-push", "deploy"}
MAIN_PUSH = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


def _on(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _uses(job: dict) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


def test_triggers_push_to_main_and_pull_requests(workflow: dict) -> None:
    on = _on(workflow)
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on


def test_jobs_and_their_order(workflow: dict) -> None:
    jobs = workflow["jobs"]
    assert set(jobs) == JOBS
    needs = {name: set(_as_list(job.get("needs", []))) for name, job in jobs.items()}
    assert needs["test"] == {"data"}
    assert needs["build-and-push"] == {"validate", "test"}
    assert needs["deploy"] == {"build-and-push"}


def test_least_privilege_concurrency_and_timeouts(workflow: dict) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["group"]
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 90, name
        extra = {k: v for k, v in job.get("permissions", {}).items() if v != "read"}
        assert extra in ({}, {"id-token": "write"}), f"{name}: {extra}"
        if extra:
            assert name == "data", "only the data job assumes an AWS role"
    assert workflow["jobs"]["deploy"]["concurrency"]["cancel-in-progress"] is False


def test_actions_are_pinned_to_a_major_version_or_a_sha(workflow: dict) -> None:
    for job in workflow["jobs"].values():
        for uses in _uses(job):
            assert re.search(r"@(v\d+|[0-9a-f]{40})$", uses), uses


def test_test_job_runs_the_readme_command_against_a_postgresql_service(workflow: dict) -> None:
    job = workflow["jobs"]["test"]
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert "make test" in _runs(job).splitlines()
    assert any(u.startswith("actions/cache@") for u in _uses(job)), "pip downloads are cached"
    for name in ("validate", "data"):
        setup = [s for s in workflow["jobs"][name]["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert setup and setup[0]["with"]["cache"] == "pip", name


def test_validate_job_runs_the_same_validators_as_make_test(workflow: dict) -> None:
    runs = _runs(workflow["jobs"]["validate"])
    compose = " ".join(p.name for p in specs.COMPOSE_FILES)
    assert f"check-jsonschema --builtin-schema vendor.compose-spec {compose}" in runs
    assert "check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/cicd.yml" in runs
    assert "actionlint .github/workflows/cicd.yml" in runs
    dockerfiles = " ".join(str(p.relative_to(specs.ROOT)) for p in specs.DOCKERFILES.values())
    assert f"hadolint --failure-threshold error {dockerfiles}" in runs


def test_data_job_pulls_with_oidc_or_keys(workflow: dict) -> None:
    job = workflow["jobs"]["data"]
    assert "dvc pull" in _runs(job)
    creds = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
    assert {"role-to-assume"} <= set(creds[0]["with"]) and {"aws-access-key-id"} <= set(creds[1]["with"])


def test_build_and_push_uses_the_build_compose_file_and_pushes_from_main_only(workflow: dict) -> None:
    job = workflow["jobs"]["build-and-push"]
    steps = job["steps"]
    build = next(s for s in steps if "build.yml build" in s.get("run", ""))
    push = next(s for s in steps if "build.yml push" in s.get("run", ""))
    assert build["run"].strip() == "docker compose -f docker-compose.build.yml build"
    assert push["if"] == "env.PUSH == 'true'" and job["env"]["PUSH"] == "${{ " + MAIN_PUSH + " }}"
    login = next(s for s in steps if s.get("uses", "").startswith("docker/login-action@"))
    assert login["if"] == "env.PUSH == 'true'"
    assert "secrets.DOCKERHUB_TOKEN" in login["with"]["password"]
    assert set(job["env"]) >= {"REGISTRY", "IMAGE_PREFIX", "TAG"}


def test_deploy_only_from_main_over_ssh_and_waits_on_health(workflow: dict, openapi_paths: set[str]) -> None:
    job = workflow["jobs"]["deploy"]
    assert job["if"] == MAIN_PUSH
    runs = _runs(job)
    assert "scp docker-compose.deploy.yml" in runs
    assert "compose pull" in runs and "compose up -d" in runs
    assert "StrictHostKeyChecking yes" in runs, "the host key comes from a secret, not trust on first use"
    # It waits on the public HTTPS entrypoint (by the name its certificate carries) and on an
    # endpoint the backend really serves; it copies the proxy's configuration the deploy file mounts.
    assert '--resolve "$site:443:127.0.0.1" "https://$site/api/health"' in runs
    assert "tar -czf - monitoring proxy" in runs
    backend = re.findall(r"http://127\.0\.0\.1:8000(/[\w/-]*)", runs)
    assert backend and all(path in openapi_paths for path in backend)
    assert job["env"]["TAG"] == workflow["jobs"]["build-and-push"]["env"]["TAG"]
