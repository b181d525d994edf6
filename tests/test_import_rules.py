"""The rooms of docs/architecture.md, held by the imports themselves: arrows point down only,
and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "onesuite_fs"

# room -> what it must never import (top-level packages or onesuite_fs rooms)
FORBIDDEN = {
    "core": {"pyfuse3", "trio", "onesuite_fs.daemon", "onesuite_fs.cli", "onesuite_fs.nfs",
             "onesuite_fs.inspect", "onesuite_fs.transform", "onesuite_fs.settings",
             "onesuite_fs.sources"},
    "sources": {"pyfuse3", "trio", "onesuite_fs.daemon", "onesuite_fs.cli", "onesuite_fs.nfs",
                "onesuite_fs.inspect", "onesuite_fs.transform", "onesuite_fs.settings"},
    "inspect": {"pyfuse3", "trio", "onesuite_fs.daemon", "onesuite_fs.cli",
                "onesuite_fs.nfs"},
    "transform": {"pyfuse3", "trio", "onesuite_fs.daemon", "onesuite_fs.cli",
                  "onesuite_fs.nfs"},
}



def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, absolute (relative imports resolved; `from X import y`
    counts X and X.y, since y may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def forbidden_imports(modules: dict[str, set[str]]) -> list[str]:
    """`module imports target` for every import that points upwards out of its room."""
    wrong = []
    for module, imported in modules.items():
        room = module.split(".")[1] if module.count(".") else ""
        for target in imported:
            for forbidden in FORBIDDEN.get(room, ()):
                if target == forbidden or target.startswith(forbidden + "."):
                    wrong.append(f"{module} imports {target}")
    return sorted(wrong)


def test_rooms_import_only_downwards():
    wrong = forbidden_imports(all_modules())
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_back():
    graph = all_modules()
    edges = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # A package's __init__ importing its own submodules is not a loop of the code.
    edges = {m: {t for t in ts if m != t.rpartition(".")[0]} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_see_a_forbidden_import():
    """The checker itself: upward imports out of core are found, downward ones are not, and
    relative imports are resolved to the module they name."""
    assert forbidden_imports({
        "onesuite_fs.core.sample": {"onesuite_fs.daemon.live", "onesuite_fs.core.view",
                                    "onesuite_fs.sources.cluster_xml", "pyfuse3"},
        "onesuite_fs.daemon.sample": {"onesuite_fs.core.view", "pyfuse3"},
    }) == ["onesuite_fs.core.sample imports onesuite_fs.daemon.live",
           "onesuite_fs.core.sample imports onesuite_fs.sources.cluster_xml",
           "onesuite_fs.core.sample imports pyfuse3"]
    assert "onesuite_fs.core.view" in imports_of(PACKAGE / "core" / "walk.py")
    assert "onesuite_fs.core.onesis_rules" in imports_of(PACKAGE / "core" / "onesis_view.py")
