"""The layout's rules, checked on the source: every module imports on its own, no import
cycle (imports inside functions count), the data flow runs one way, long functions say why.

See docs/architecture.md for the layout these rules keep true.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("plato_sim", "plato_cnn")
#: a function longer than this needs a ``# Long because: ...`` comment in the comment block
#: just above its ``def``
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body (top level or in functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(
                    base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                )
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # the longest prefix that is a project module
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in MODULES and cand != name:
                    found.add(cand)
                    break
    # importing a submodule imports its parent packages too; those edges are not cycles of ours
    return {m for m in found if not name.startswith(m + ".")}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def _edges_from(prefix: str) -> set[tuple[str, str]]:
    return {(a, b) for a, deps in GRAPH.items() if a.startswith(prefix) for b in deps}


def test_the_simulator_never_imports_the_estimation_side():
    assert {e for e in _edges_from("plato_sim") if e[1].startswith("plato_cnn")} == set()


def test_storage_formats_do_not_depend_on_scenes():
    bad = {e for e in _edges_from("plato_sim.io") if e[1].startswith("plato_sim.scenes")}
    assert bad == set()


def test_only_the_cli_imports_the_offline_pipelines():
    bad = {
        (a, b)
        for a, deps in GRAPH.items()
        for b in deps
        if b.startswith("plato_cnn.pipelines")
        and not a.startswith("plato_cnn.pipelines")
        and a != "plato_cnn.cli"
    }
    assert bad == set()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports_in_a_fresh_interpreter(name):
    r = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_long_functions_say_why():
    offenders = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
                continue
            k = first - 2  # the comment block just above the def (or its decorators)
            block = []
            while k >= 0 and lines[k].strip().startswith("#"):
                block.append(lines[k].strip())
                k -= 1
            if not any(c.startswith("# Long because:") for c in block):
                offenders.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert offenders == []


def test_the_evaluation_family_never_reaches_training_or_calibration():
    """The out-of-family cameras score estimators; nothing that learns or calibrates sees them."""
    family = {"plato_sim.optics.family_nodal", "plato_sim.scenes.out_of_family",
              "plato_sim.scenes.inorbit_nodal"}  # fmt: skip
    learners = [m for m in GRAPH if m.startswith(("plato_cnn.pipelines", "plato_cnn.nn"))]
    reach: dict[str, set[str]] = {}

    def closure(m: str) -> set[str]:
        if m not in reach:
            reach[m] = set()
            for d in GRAPH.get(m, ()):
                reach[m] |= {d} | closure(d)
        return reach[m]

    assert {m: sorted(closure(m) & family) for m in learners if closure(m) & family} == {}


def test_the_calibration_and_evaluation_families_never_meet():
    """The high-order family calibrates what the nodal family scores: neither imports the other."""
    nodal = {"plato_sim.optics.family_nodal", "plato_sim.scenes.out_of_family"}
    highorder = {"plato_sim.optics.family_highorder", "plato_sim.scenes.calibration_family"}

    def closure(m: str, seen: set[str] | None = None) -> set[str]:
        seen = set() if seen is None else seen
        for d in GRAPH.get(m, ()):
            if d not in seen:
                seen.add(d)
                closure(d, seen)
        return seen

    assert all(closure(m).isdisjoint(highorder) for m in nodal)
    assert all(closure(m).isdisjoint(nodal) for m in highorder)
    assert all(m in GRAPH for m in nodal | highorder)
