"""No import cycles: the studio's module graph (every import, function-level ones included, so a lazy import
cannot hide a cycle) is acyclic, and every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Source folders and the package each installs as (pyproject's package-dir).
PACKAGES = {"studio": "studio", "objectives": "studio.objectives", "param": "studio.param"}


def studio_modules() -> dict[str, Path]:
    """Every module of the distribution by import name, from the source tree (nothing is imported)."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [*package.split("."), *path.relative_to(REPO / folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The studio modules ``name`` imports anywhere in its file (``from studio import x`` counts as
    ``studio.x`` when that is a module), except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for block in ast.walk(tree) if _type_checking_only(block) for n in ast.walk(block)}
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module in known and module != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path ``a -> b -> ... -> a``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node))), None)


def test_module_graph_has_no_cycle():
    modules = studio_modules()
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    graph = {name: {m for m in imports_of(name, path, set(modules)) if not (path.name == "__init__.py"
                                                                               and m.startswith(name + "."))}
             for name, path in modules.items()}
    assert "studio.targets" in graph["studio.engine"] and "studio.hooks" in graph["studio.models"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """One interpreter loads the third-party libraries, then forks a child per module that imports only
    that module (one child per core at a time): no studio module is loaded before it, so an order-dependent
    import fails here."""
    names = sorted(name for name in studio_modules() if name != "studio.__main__")  # it runs the CLI
    script = f"""
import importlib, os, sys
import numpy, torch, torchvision, timm, kornia, imageio.v3, tqdm, napari, magicgui.widgets, napari.qt.threading, ray
assert not [m for m in sys.modules if m == "studio" or m.startswith("studio.")]
failed, running = [], {{}}

def reap():
    pid, status = os.wait()
    name = running.pop(pid)
    if status != 0:
        failed.append(name)

for name in {names!r}:
    if len(running) >= (os.cpu_count() or 1):
        reap()
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(name, type(error).__name__, error, flush=True)
            os._exit(1)
        os._exit(0)
    running[pid] = name
while running:
    reap()
print("FAILED", sorted(failed))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("FAILED []"), result.stdout[-3000:]
