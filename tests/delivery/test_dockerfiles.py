"""The images' contract, read from the Dockerfiles and their .dockerignore files (no Docker engine)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from tests.delivery import specs

NAMES = list(specs.DOCKERFILES)
WITH_WEIGHTS = ["backend", "trainer", "airflow"]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE", re.I)


def test_every_dockerfile_in_the_repository_is_known() -> None:
    """The five images, the shared base they build FROM, and the local stand-ins."""
    skip = {".venv", ".git", ".run", "node_modules", "Data", "artifacts", "test-artifacts", "__pycache__"}
    found = set()
    for folder, dirs, files in os.walk(specs.ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        found |= {Path(folder, f) for f in files if f.startswith("Dockerfile") and not f.endswith(".dockerignore")}
    assert specs.STANDIN_DOCKERFILES
    assert found == {*specs.DOCKERFILES.values(), specs.BASE_DOCKERFILE, *specs.STANDIN_DOCKERFILES}


@pytest.mark.parametrize("name", NAMES)
def test_images_build_from_the_shared_base_only(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    df = dockerfiles[name]
    assert df.global_args.get("BASE_IMAGE") == "localhost/rps-base:dev"
    assert df.stages[0].base == "${BASE_IMAGE}"
    stage_names = {s.name for s in df.stages}
    for stage in df.stages[1:]:
        assert stage.base in stage_names or stage.base.startswith("weights-${"), f"{df.path}: FROM {stage.base}"
    # The environment is the base's: no image installs Python packages of its own.
    for stage in df.stages:
        assert not any("pip install" in i.args for i in stage.all("RUN")), f"{df.path}: pip install"


def test_base_installs_the_pinned_environment_on_the_upstream_python_image() -> None:
    """Every third-party FROM is a build argument defaulting to the real, pinned upstream image."""
    df = specs.parse_dockerfile(specs.BASE_DOCKERFILE)
    assert df.global_args == {"PYTHON_IMAGE": "python:3.11.7-slim-bookworm"}
    assert [s.base for s in df.stages] == ["${PYTHON_IMAGE}"]
    runs = " ".join(i.args for i in df.final.all("RUN"))
    pins = "-r /tmp/requirements/requirements.txt -c /tmp/requirements/constraints.txt"
    assert f"pip install --no-cache-dir {pins}" in runs
    assert "pip check" in runs
    assert specs.read_ignore(specs.ignore_file_for(specs.BASE_DOCKERFILE)).excluded(".env")
    for path in specs.STANDIN_DOCKERFILES:
        standin = specs.parse_dockerfile(path)
        assert [s.base for s in standin.stages] == ["${STANDIN_DEBIAN}"], path


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_a_non_root_user_with_a_healthcheck(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    final = dockerfiles[name].final
    users = final.all("USER")
    assert users, f"{name}: the final stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{name}: runs as root"
    assert final.all("HEALTHCHECK"), f"{name}: no HEALTHCHECK"
    assert "NONE" not in final.all("HEALTHCHECK")[-1].args.split()


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_is_baked_in(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    df = dockerfiles[name]
    for stage in df.stages:
        for ins in stage.all("ENV") + stage.all("ARG"):
            for key in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + ins.args) or [ins.args.split("=")[0]]:
                assert not SECRET_NAME.search(key), f"{df.path}:{ins.line}: {key} would be stored in the image"
        for ins in stage.all("COPY") + stage.all("ADD"):
            sources, _, _ = specs.copy_sources(ins)
            assert not any(s.startswith(".env") or s.endswith((".pem", ".key")) for s in sources), ins.args


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_backbone_weights_build_argument(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    df = dockerfiles[name]
    assert df.global_args.get("BACKBONE_WEIGHTS_SOURCE") == "imagenet"
    assert df.final.base == "weights-${BACKBONE_WEIGHTS_SOURCE}"
    imagenet = df.stage("weights-imagenet")
    assert any(
        "keras.applications.MobileNetV2(weights='imagenet', include_top=False" in i.args for i in imagenet.all("RUN")
    )
    local = df.stage("weights-local")
    assert any(i.args.startswith("BACKBONE_WEIGHTS_FILE=") for i in local.all("ARG"))
    (copy,) = local.all("COPY")
    sources, _, _ = specs.copy_sources(copy)
    assert sources == ["${BACKBONE_WEIGHTS_FILE}"]
    # Both stages tell the code which backbone it has, through the settings' own names.
    for stage in (imagenet, local):
        env = " ".join(i.args for i in stage.all("ENV"))
        assert all(f"{key}=" in env for key in ("BACKBONE", "BACKBONE_ALPHA", "BACKBONE_WEIGHTS"))
    # The weights' default local file is allowed into the build context.
    default_file = next(i.args for i in local.all("ARG") if i.args.startswith("BACKBONE_WEIGHTS_FILE=")).split("=")[1]
    assert not specs.read_ignore(specs.ignore_file_for(df.path)).excluded(default_file)


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_images_that_train_or_serve_carry_the_hand_models(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    runtime = dockerfiles[name].stage("runtime")
    assert any("utils.hand_models import fetch" in i.args and "/opt/hand-models" in i.args for i in runtime.all("RUN"))
    assert any(i.args == "HAND_MODELS_DIR=/opt/hand-models" for i in runtime.all("ENV"))


@pytest.mark.parametrize("name", NAMES)
def test_copied_paths_exist_and_are_in_the_build_context(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    df = dockerfiles[name]
    rules = specs.read_ignore(specs.ignore_file_for(df.path))
    for stage in df.stages:
        for ins in stage.all("COPY"):
            sources, _, flags = specs.copy_sources(ins)
            if "from" in flags:
                continue
            for source in sources:
                if "$" in source:
                    continue  # the local weights file, checked above
                assert (specs.ROOT / source).exists(), f"{df.path}:{ins.line}: {source} is not in the repository"
                assert not rules.excluded(source), f"{df.path}:{ins.line}: {source} is .dockerignored"


@pytest.mark.parametrize("name", NAMES)
def test_build_context_leaves_out_secrets_state_and_data(name: str) -> None:
    ignore = specs.ignore_file_for(specs.DOCKERFILES[name])
    assert ignore != specs.ROOT / ".dockerignore", f"{name} has no Dockerfile-specific .dockerignore"
    for rules in (specs.read_ignore(ignore), specs.read_ignore(specs.ROOT / ".dockerignore")):
        for path in (
            ".env",
            ".git/config",
            ".venv/bin/python",
            ".run/backend.log",
            "Data/raw/rock/1.png",
            "artifacts/model/model.tflite",
            "mlruns/0/meta.yaml",
            ".dvc/config.local",
            "deploy/tls.key",
            "utils/__pycache__/settings.cpython-311.pyc",
        ):
            assert rules.excluded(path), f"{path} would enter the {name} build context"


@pytest.mark.parametrize("name", NAMES)
def test_entrypoint_scripts_exist_and_are_executable(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    df = dockerfiles[name]
    command = (df.exec_form("ENTRYPOINT") or []) + (df.exec_form("CMD") or [])
    assert command, f"{name}: neither ENTRYPOINT nor CMD"
    for word in command:
        if word.startswith("/app/"):
            script = specs.ROOT / word.removeprefix("/app/")
            assert script.is_file(), f"{name} runs {word}, but {script.relative_to(specs.ROOT)} does not exist yet"
            assert os.access(script, os.X_OK), f"{script.relative_to(specs.ROOT)} is not executable (git mode 755)"


# What each image starts, for the import check below (the frontend's pages load by path).
ENTRY_FILES = {
    "backend": ["main.py"],
    "trainer": [
        "src/train.py",
        "src/evaluate.py",
        "src/data.py",
        "src/pipeline.py",
        "Database_connection/__main__.py",
        # the training queue's Celery worker
        "airflow/dags/*.py",
        "scripts/env_export.py",
    ],
    "streamlit": ["frontend/**/*.py"],
    "airflow": ["airflow/dags/*.py", "src/pipeline.py", "scripts/env_export.py", "scripts/ensure_service_db.py"],
    "mlflow": ["scripts/env_export.py", "scripts/ensure_service_db.py"],
}


def _first_party_closure(entries: list[Path]) -> set[Path]:
    """Every project file reachable through imports, function-level ones included."""
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                base = specs.ROOT.joinpath(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        todo.append(candidate)
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_every_project_module_an_image_imports_is_copied(name: str, dockerfiles: dict[str, specs.Dockerfile]) -> None:
    df = dockerfiles[name]
    copied = set()
    for ins in df.final.all("COPY"):
        sources, _, flags = specs.copy_sources(ins)
        if "from" not in flags:
            copied |= {s.rstrip("/") for s in sources}
    entries = [p for pattern in ENTRY_FILES[name] for p in sorted(specs.ROOT.glob(pattern))]
    assert entries, f"{name}: no entry files yet"
    for path in _first_party_closure(entries):
        rel = path.relative_to(specs.ROOT)
        covered = any(rel == Path(c) or Path(c) in rel.parents for c in copied)
        assert covered, f"the {name} image runs code that imports {rel}, which it does not copy"
