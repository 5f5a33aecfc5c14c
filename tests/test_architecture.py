"""The package layers of ``debiasbench`` import only downwards, and no module cycle exists.

The order is the one ``debiasbench/__init__.py`` shows; a package may import itself and
any package listed before it. Every ``import`` counts, also those inside functions, so a
lazy import cannot hide an upward dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. ``methods`` and ``datasets`` are the repository's plugin folders.
LAYERS = ["core", "data", "models", "evaluation", "contract", "train", "methods", "datasets", "track", "run",
          "sweep", "report", "testing", "cli"]
#: Plugins are independent of each other's folder: a dataset never needs a method.
NOT_ALLOWED = {("datasets", "methods"), ("methods", "datasets")}


def _module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((ROOT / "debiasbench").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(p for p in parts if p != "__init__")] = path
    for folder in ("methods", "datasets"):
        for path in sorted((ROOT / folder).glob("*.py")):
            stem = "" if path.stem == "__init__" else "." + path.stem
            files[f"debiasbench.{folder}{stem}"] = path
    return files


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("debiasbench")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_belongs_to_a_layer():
    assert {m for m in _module_files() if m != "debiasbench" and _layer(m) is None} == set()


def test_packages_import_only_layers_below_them():
    upward = []
    for module, path in _module_files().items():
        own = _layer(module)
        if own is None:
            continue
        for target in _imports(path):
            other = _layer(target)
            if other is None or other == own:
                continue
            if LAYERS.index(other) > LAYERS.index(own) or (own, other) in NOT_ALLOWED:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_no_import_cycles_between_modules():
    files = _module_files()
    graph = {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_package_map_lists_every_layer():
    """The map in debiasbench/__init__.py is what a newcomer reads first: it names every package."""
    doc = (ROOT / "debiasbench" / "__init__.py").read_text()
    packages = [p for p in LAYERS if (ROOT / "debiasbench" / p).is_dir()]
    assert [p for p in packages if f"``{p}``" not in doc] == []
