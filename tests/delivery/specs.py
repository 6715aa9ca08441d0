"""Readers for the delivery files: Dockerfiles, .dockerignore patterns, Compose interpolation,
.env and the native stack's scripts. Small and strict: they read only what the project writes."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

DOCKERFILES = {
    "backend": ROOT / "Dockerfile.backend",
    "trainer": ROOT / "src" / "Dockerfile.src",
    "streamlit": ROOT / "frontend" / "Dockerfile",
    "airflow": ROOT / "airflow" / "Dockerfile",
    "mlflow": ROOT / "mlflow" / "Dockerfile",
}
# The shared base the five build FROM, and the local stand-ins for upstream images.
BASE_DOCKERFILE = ROOT / "Dockerfile.base"
STANDIN_DOCKERFILES = sorted((ROOT / "scripts" / "standin").glob("Dockerfile.*"))
COMPOSE_LOCAL = ROOT / "docker-compose.yml"
COMPOSE_BUILD = ROOT / "docker-compose.build.yml"
COMPOSE_DEPLOY = ROOT / "docker-compose.deploy.yml"
# Layered on the local file: Airflow's CeleryExecutor, Redis and the workers.
COMPOSE_CELERY = ROOT / "docker-compose.celery.yml"
COMPOSE_FILES = (COMPOSE_LOCAL, COMPOSE_BUILD, COMPOSE_DEPLOY, COMPOSE_CELERY)
WORKFLOW = ROOT / ".github" / "workflows" / "cicd.yml"


# ---------------------------------------------------------------- Dockerfiles


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str | None]
    stages: list[Stage]
    text: str

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def exec_form(self, keyword: str) -> list[str] | None:
        """The final stage's CMD or ENTRYPOINT in exec form, inherited from its parent stages."""
        stage: Stage | None = self.final
        while stage is not None:
            found = stage.all(keyword)
            if found:
                value = yaml.safe_load(found[-1].args)
                assert isinstance(value, list), f"{self.path}: {keyword} must use the exec (JSON) form"
                return value
            stage = self._parent(stage)
        return None

    def _parent(self, stage: Stage) -> Stage | None:
        base = stage.base
        for name, default in self.global_args.items():
            base = base.replace("${" + name + "}", default or "")
        return next((s for s in self.stages if s.name == base), None)


def parse_dockerfile(path: Path) -> Dockerfile:
    text = path.read_text()
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf = ""
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for n, line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"{path}:{n}: only ARG may come before the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default or None
        else:
            stages[-1].instructions.append(Instruction(keyword, args, n))
    return Dockerfile(path=path, global_args=global_args, stages=stages, text=text)


def copy_sources(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    """(sources, destination, flags) of a COPY/ADD instruction."""
    words = shlex.split(instruction.args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return words[:-1], words[-1], flags


# ---------------------------------------------------------------- .dockerignore


def ignore_file_for(dockerfile: Path) -> Path:
    """BuildKit uses <Dockerfile>.dockerignore next to the Dockerfile before the root one."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return specific if specific.exists() else ROOT / ".dockerignore"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


@dataclass
class IgnoreRules:
    rules: list[tuple[bool, re.Pattern[str]]]

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative to the context) is left out: the last matching rule decides,
        and a rule matches a path when it matches the path or one of its parent folders."""
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negated, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negated
        return result


def read_ignore(path: Path) -> IgnoreRules:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        pattern = re.sub(r"/+$", "", pattern.strip()).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return IgnoreRules(rules)


# ---------------------------------------------------------------- Compose


@cache
def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?msg}, ${VAR?msg}, ${VAR:+x}, $VAR; `$$` is a literal dollar.
_INTERPOLATION = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Reference:
    name: str
    op: str | None  # None, ":-", "-", ":?", "?", ":+", "+"
    arg: str

    @property
    def required(self) -> bool:
        return self.op in (":?", "?")

    @property
    def has_default(self) -> bool:
        return self.op in (":-", "-")


def references(text: str) -> list[Reference]:
    text = text.replace("$$", "")
    out = []
    for m in _INTERPOLATION.finditer(text):
        name = m.group("braced") or m.group("bare")
        out.append(Reference(name, m.group("op"), m.group("arg") or ""))
    return out


def strip_interpolation(value: str) -> str:
    """`${REGISTRY:?msg}/x` -> `${REGISTRY}/x`: compare names without defaults or messages."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", r"${\1}", value)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def effective_command(service: dict, dockerfile: Dockerfile | None) -> list[str]:
    """What a Compose service runs: its entrypoint/command, else the image's."""

    def as_list(value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return shlex.split(value) if isinstance(value, str) else list(value)

    entrypoint = as_list(service.get("entrypoint"))
    command = as_list(service.get("command"))
    if dockerfile is not None:
        if entrypoint is None:
            entrypoint = dockerfile.exec_form("ENTRYPOINT") or []
            if command is None:
                command = dockerfile.exec_form("CMD") or []
        elif command is None:
            command = []  # a new entrypoint drops the image's CMD
    return (entrypoint or []) + (command or [])


# ---------------------------------------------------------------- native stack


def native_scripts_text() -> str:
    """What `make up` runs: the Makefile and every shell script under scripts/."""
    parts = [(ROOT / "Makefile").read_text()]
    parts += [p.read_text() for p in sorted((ROOT / "scripts").rglob("*.sh"))]
    return "\n".join(parts)
