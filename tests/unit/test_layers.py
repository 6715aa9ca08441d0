"""Imports point one way: the backend (main.py, api/, inference/ and what they import)
never imports training code from src/, so its image does not ship it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND_ENTRIES = [ROOT / "main.py", *sorted((ROOT / "api").glob("*.py")), *sorted((ROOT / "inference").glob("*.py"))]


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names `path` imports anywhere, function-level imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _project_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def backend_import_chains() -> dict[Path, list[str]]:
    """Every project file the backend reaches through imports, with one chain that reaches it."""
    chains: dict[Path, list[str]] = {p: [p.relative_to(ROOT).as_posix()] for p in BACKEND_ENTRIES}
    todo = list(BACKEND_ENTRIES)
    while todo:
        path = todo.pop()
        for module in sorted(_imported_modules(path)):
            target = _project_file(module)
            if target is not None and target not in chains:
                chains[target] = [*chains[path], module]
                todo.append(target)
    return chains


def test_the_backend_imports_nothing_from_src() -> None:
    reached = backend_import_chains()
    offending = {p: chain for p, chain in reached.items() if (ROOT / "src") in p.parents}
    assert not offending, "the backend imports training code: " + "; ".join(
        " -> ".join(chain) for chain in offending.values()
    )
    # The check itself must see the backend's real imports (a walker that finds nothing passes).
    assert ROOT / "inference" / "registry.py" in reached
    assert ROOT / "Database_connection" / "repository.py" in reached


def test_the_backend_image_does_not_copy_src() -> None:
    copies = [
        line.split()[1:]
        for line in (ROOT / "Dockerfile.backend").read_text().splitlines()
        if line.strip().upper().startswith("COPY") and "--from" not in line
    ]
    assert not any(src.rstrip("/") == "src" for args in copies for src in args[:-1])


def test_the_walker_catches_a_function_level_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from src.registry import champion\n")
    assert "src.registry" in _imported_modules(module)
