"""The direction of dependencies, read from every module's syntax tree (lazy imports included).

hapflow <- prep <- loader <- train <- analysis: a layer imports only the layers to its left;
hapflow (shared config, IO, CLI) imports no stage; prep never imports torch; nothing imports
benchmarks/; modules form no import cycle; an import inside a function says why in a comment.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = ("hapflow", "prep", "loader", "train", "analysis")
FORBIDDEN = {
    "hapflow": {"prep", "loader", "train", "analysis", "torch"},
    "prep": {"loader", "train", "analysis", "torch"},
    "loader": {"train", "analysis"},
    "train": {"analysis"},
    "analysis": set(),
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement of a file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if`/`try` count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, id(node) in top))
            # `from pkg import module` names a module of ours too
            found += [(f"{node.module}.{a.name}", node.lineno, id(node) in top)
                      for a in node.names if f"{node.module}.{a.name}" in MODULES]
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_import_only_the_layers_below(module):
    layer = module.split(".")[0]
    bad = [(name, line) for name, line, _ in _imports(MODULES[module])
           if name.split(".")[0] in FORBIDDEN[layer] or name.split(".")[0] == "benchmarks"]
    assert not bad, f"{module} ({layer}) imports {bad}: dependencies run hapflow <- prep <- " \
                    "loader <- train <- analysis"


def _says_why(lines: list[str], line: int) -> bool:
    """A comment on the import's line, or above the block of imports it belongs to."""
    i = line - 1
    if "#" in lines[i]:
        return True
    while i > 0:
        i -= 1
        text = lines[i].strip()
        if "#" in text:
            return True
        if not (text == "" or text.startswith(("import ", "from ", "matplotlib.use("))):
            return False
    return False


def test_local_imports_say_why():
    missing = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for name, line, at_top in _imports(path):
            if not at_top and not _says_why(lines, line):
                missing.append(f"{module}:{line} imports {name}")
    assert not missing, "imports inside functions need a comment saying why:\n" + "\n".join(
        missing)


def test_no_import_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name, _, _ in _imports(path):
            target = name
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def test_nothing_imports_benchmarks():
    for path in (ROOT / "tests").rglob("*.py"):
        names = [name for name, _, _ in _imports(path)]
        assert not any(n.split(".")[0] == "benchmarks" for n in names), f"{path} imports it"


def test_prep_never_imports_torch_at_run_time():
    """Importing every prep module (what a CPU-only shard node does) leaves torch unloaded."""
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, prep\n"
        "for m in pkgutil.iter_modules(prep.__path__):\n"
        "    importlib.import_module('prep.' + m.name)\n"
        "assert 'torch' not in sys.modules, 'prep imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
