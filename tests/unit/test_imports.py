"""The package's import structure: every module imports, no import cycle among harness modules
(counting imports inside functions, which only hide a cycle), and no module imports another
module's private (underscore) name.

The graph is read from the source files on disk (an AST walk), so modules added later are checked
too."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "harness"

# Edges of cycles in modules outside the report/analysis/agent-CLI part, known and reported, to be
# broken by their owners: (importer, imported). Keep empty when none.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
# Private names imported across modules outside that part, known and reported: (importer, module, name).
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py")) if "conf" not in p.relative_to(PKG).parts[:1]}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> list[tuple[str, str, str | None, int]]:
    """(importer, imported module, imported name or None, line) for every import of a harness
    module anywhere in a harness module (module level and inside functions)."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "harness" or a.name.startswith("harness."):
                        out.append((mod, a.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, is_pkg, node)
                if not (target == "harness" or target.startswith("harness.")):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:  # `from . import store`: the submodule itself
                        out.append((mod, sub, None, node.lineno))
                    else:
                        out.append((mod, target, a.name, node.lineno))
    return out


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in mods}
    for src, dst, _, _ in imports(mods):
        # Importing a.b.c runs a/__init__ and a/b/__init__ too, but package __init__s here are
        # docstrings only; the edge that matters is to the module named.
        if dst in mods and dst != src:
            g[src].add(dst)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_imports():
    failed = []
    for mod in modules():
        if mod.endswith("__main__"):  # runs the CLI when imported
            continue
        try:
            importlib.import_module(mod)
        except ImportError as e:  # optional extras (ray, submitit) may be absent
            if getattr(e, "name", None) and not str(e.name).startswith("harness"):
                continue
            failed.append(f"{mod}: {e}")
    assert not failed, failed


def test_no_import_cycle_among_harness_modules():
    g = graph(modules())
    for src, dst in KNOWN_CYCLE_EDGES:
        g.get(src, set()).discard(dst)
    assert cycles(g) == [], "import cycles (counting imports inside functions)"


def test_the_report_and_agent_cycles_are_gone():
    g = graph(modules())
    comps = cycles(g)
    for a, b in (("harness.agent.cli", "harness.analysis_cli"), ("harness.agent.facts", "harness.report.build"),
                 ("harness.report.build", "harness.agent.narrative"), ("harness.agent.narrative", "harness.agent.facts")):
        assert not any(a in c and b in c for c in comps), (a, b)


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{src}:{line} imports {name} from {dst}" for src, dst, name, line in imports(modules())
           if name is not None and name.startswith("_") and not name.startswith("__") and dst != src
           and (src, dst, name) not in KNOWN_PRIVATE_IMPORTS]
    assert bad == []


def test_the_walk_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: a cycle hidden in a function and a relative private import are found."""
    pkg = tmp_path / "harness"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import _x\n")
    global PKG
    saved, PKG = PKG, pkg
    try:
        mods = modules()
        assert cycles(graph(mods)) == [["harness.a", "harness.sub.b"]]
        assert ("harness.sub.b", "harness.a", "_x", 2) in imports(mods)
    finally:
        PKG = saved


@pytest.mark.parametrize("name", ["harness.report.format", "harness.report.pipeline"])
def test_shared_report_modules_exist(name):
    importlib.import_module(name)


def test_a_run_and_a_report_do_not_import_scipy_stats():
    # scipy.stats takes about a second to import, paid by every `harness run`, `report` and
    # `compare` process; the quantiles and t-tests they need come from scipy.special. Only the
    # resampled permutation test imports scipy.stats, when it runs.
    import subprocess
    import sys

    code = ("import sys, harness.runner, harness.metrics, harness.analysis_cli, harness.analysis.compare, "
            "harness.analysis.noise, harness.analysis.significance, harness.report.figures, harness.sweepindex; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
