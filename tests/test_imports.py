"""The import structure: no cycles between packages, no core import of a recipe, and a
runner that loads no Kaldi wheel.

Nodes are tsasr's packages (a directory under tsasr/ with __init__.py: tsasr.hmm,
tsasr.decode, ...), its top-level modules (tsasr.run, tsasr.config, tsasr.kaldi, ...),
each recipe (tsasr.recipes.<name>), the root package `tsasr`, and `data_prep` as one
node. An edge A -> B is any import in A's files of something in B, read with `ast` from
every .py file: module-level, function-level and `importlib.import_module("literal")`
imports alike, so an import moved into a function body still counts.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("tsasr", "data_prep")
RECIPES = "tsasr.recipes"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def node_of(module: str) -> str | None:
    """The graph node a module belongs to; None for modules outside tsasr and data_prep."""
    parts = module.split(".")
    if parts[0] == "data_prep":
        return "data_prep"
    if parts[0] != "tsasr":
        return None
    if len(parts) == 1:
        return "tsasr"
    if parts[1] == "recipes" and len(parts) > 2 and _is_module(".".join(parts[:3])):
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def _package_of(path: pathlib.Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imported_modules(path: pathlib.Path) -> list[tuple[str, int]]:
    """(module, line) for every import in the file, wherever it is in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path).split(".")
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if _is_module(candidate) else base, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """node -> {imported node: ["file:line", ...]} over every .py file of the packages."""
    graph: dict[str, dict[str, list[str]]] = {}
    for top in TOP_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            source = node_of(_module_name(path))
            graph.setdefault(source, {})
            for module, line in _imported_modules(path):
                target = node_of(module)
                if target is not None and target != source:
                    graph[source].setdefault(target, []).append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def shortest_cycle(graph: dict[str, dict], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside a strongly connected component."""
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w not in within:
                    continue
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    return [start]


def _describe(graph, cycle: list[str]) -> str:
    steps = [f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("import os\n\ndef f():\n    from tsasr.hmm import stages\n    import data_prep.corpus\n")
    modules = [m for m, _ in _imported_modules(source)]
    assert {"os", "tsasr.hmm.stages", "data_prep.corpus"} <= set(modules)
    assert node_of("tsasr.hmm.stages") == "tsasr.hmm" and node_of("tsasr.workdir") == "tsasr.workdir"
    assert node_of("data_prep.corpus") == "data_prep" and node_of("numpy") is None
    toy = {"a": {"b": ["x:1"]}, "b": {"c": ["y:2"]}, "c": {"a": ["z:3"]}, "d": {"a": ["w:4"]}}
    assert strongly_connected(toy) == [["a", "b", "c"]]
    assert shortest_cycle(toy, "a", {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_packages():
    graph = import_graph()
    cycles = [
        _describe(graph, shortest_cycle(graph, component[0], set(component)))
        for component in strongly_connected(graph)
    ]
    assert not cycles, "import cycles between packages:\n  " + "\n  ".join(cycles)


def test_core_does_not_import_recipes():
    graph = import_graph()
    bad = [
        f"{source} -> {target} ({', '.join(where[:3])})"
        for source, targets in sorted(graph.items())
        if not (source == RECIPES or source.startswith(RECIPES + "."))
        for target, where in sorted(targets.items())
        if target == RECIPES or target.startswith(RECIPES + ".")
    ]
    assert not bad, "the core imports a recipe:\n  " + "\n  ".join(bad)


def test_runner_and_launcher_load_no_kaldi_wheel():
    code = (
        "import json, sys\n"
        "import tsasr.run, tsasr.launch\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].startswith('kaldi'))))\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert not loaded, f"importing tsasr.run and tsasr.launch loads Kaldi wheels: {loaded}"
