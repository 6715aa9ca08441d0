"""The pipeline's contract, read from .github/workflows/cicd.yml."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.delivery import specs

JOBS = {"test", "validate", "data", "compose", "build-and-push", "deploy"}
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
    assert needs["compose"] == {"data"}
    assert needs["build-and-push"] == {"validate", "test", "compose"}
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


def test_actions_are_pinned_by_commit_sha(workflow: dict) -> None:
    """A tag can be moved to other code; a commit cannot. The comment names the release."""
    text = specs.WORKFLOW.read_text()
    for job in workflow["jobs"].values():
        for uses in _uses(job):
            assert re.search(r"@[0-9a-f]{40}$", uses), uses
            assert re.search(re.escape(uses) + r" # v\d+\.\d+\.\d+$", text, re.M), f"{uses}: say which release"


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
    dockerfiles = " ".join(str(p.relative_to(specs.ROOT)) for p in [specs.BASE_DOCKERFILE, *specs.DOCKERFILES.values()])
    assert f"hadolint --failure-threshold error {dockerfiles}" in runs


def test_data_job_pulls_with_oidc_or_keys_only_when_the_cache_misses(workflow: dict) -> None:
    """Pull requests (a fork's included, which get no secrets) restore the datasets that main
    cached under the hash of Data/raw.dvc; only a new pointer needs the S3 credentials."""
    job = workflow["jobs"]["data"]
    assert "dvc pull Data/raw" in _runs(job)
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "Data/raw" and "hashFiles('Data/raw.dvc')" in cache["with"]["key"]
    miss = f"steps.{cache['id']}.outputs.cache-hit != 'true'"
    creds = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
    assert {"role-to-assume"} <= set(creds[0]["with"]) and {"aws-access-key-id"} <= set(creds[1]["with"])
    for step in job["steps"]:
        if "secrets." in str(step) or "dvc pull" in step.get("run", ""):
            assert step["if"].startswith(miss), step.get("name")
    for name in ("test", "compose"):
        assert "secrets." not in str(workflow["jobs"][name]), f"{name} must run without secrets"


def test_the_data_pointer_is_committed_and_the_data_is_not() -> None:
    tracked = subprocess.run(["git", "ls-files", "Data"], cwd=specs.ROOT, capture_output=True, text=True, check=True)
    assert "Data/raw.dvc" in tracked.stdout.split()
    assert not any(p.startswith("Data/raw/") for p in tracked.stdout.split())
    ignored = subprocess.run(["git", "check-ignore", "-q", "Data/raw/x.png"], cwd=specs.ROOT)
    assert ignored.returncode == 0, "Data/raw must stay git-ignored"
    pointer = yaml.safe_load((specs.ROOT / "Data" / "raw.dvc").read_text())
    (out,) = pointer["outs"]
    assert out["path"] == "raw" and out["md5"].endswith(".dir") and out["nfiles"] > 2000


def test_compose_tests_run_in_their_own_job_on_the_runners_engine(workflow: dict) -> None:
    test, compose = workflow["jobs"]["test"], workflow["jobs"]["compose"]
    assert test["env"]["PYTEST_ADDOPTS"] == '-m "not compose"'
    assert "container" not in compose, "a job container cannot run the stack's bind mounts"
    assert compose["env"]["RPS_DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert "pytest -m compose" in _runs(compose)


def test_build_and_push_builds_the_base_first_and_pushes_from_main_only(workflow: dict) -> None:
    job = workflow["jobs"]["build-and-push"]
    steps = job["steps"]
    runs = [s.get("run", "").strip() for s in steps]
    base = next(i for i, r in enumerate(runs) if r.endswith("docker-compose.build.yml build base"))
    build = runs.index("docker compose -f docker-compose.build.yml build")
    assert base < build
    assert "BASE_TAG=base-$(cat Dockerfile.base requirements.txt constraints.txt | sha256sum" in runs[base]
    push = next(s for s in steps if "build.yml push" in s.get("run", ""))
    assert push["if"] == "env.PUSH == 'true'" and job["env"]["PUSH"] == "${{ " + MAIN_PUSH + " }}"
    login = next(s for s in steps if s.get("uses", "").startswith("docker/login-action@"))
    assert login["if"] == "env.PUSH == 'true'"
    assert "secrets.DOCKERHUB_TOKEN" in login["with"]["password"]
    assert set(job["env"]) >= {"REGISTRY", "IMAGE_PREFIX", "TAG"}
    # The release the deploy pulls: each image by the digest the registry gave it.
    release = next(s for s in steps if "RepoDigests" in s.get("run", ""))
    assert release["if"] == "env.PUSH == 'true'" and "_DIGEST=" in release["run"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "release"


def test_deploy_only_from_main_over_ssh_with_the_rollback_script(workflow: dict) -> None:
    job = workflow["jobs"]["deploy"]
    assert job["if"] == MAIN_PUSH
    runs = _runs(job)
    assert "scp scripts/deploy.sh docker-compose.deploy.yml" in runs
    assert "StrictHostKeyChecking yes" in runs, "the host key comes from a secret, not trust on first use"
    download = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["name"] == "release"
    assert "bash deploy.sh release.new.env" in runs
    script = (specs.ROOT / "scripts" / "deploy.sh").read_text()
    assert "up -d --pull missing" in script, "digests missing on the host are pulled"
    assert "rolling back" in script
    assert "tar -czf - monitoring proxy" in runs, "the deploy file mounts proxy/Caddyfile"
