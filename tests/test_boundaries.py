"""The import graph against the intended boundaries (static: every import statement, lazy ones too).

- an implementation imports only the spec, the contract, the runtime helpers and its framework;
- no implementation imports another implementation's package;
- the harness reaches implementations only through the registry (by name, never by import);
- the report imports nothing of the harness;
- no import cycles among the project's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks import registry, workloads

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("benchmarks", "shared_data", "reports", *registry.code_packages())
IMPL_MAY_USE = ("benchmarks.spec", "benchmarks.contract", "benchmarks.runtimes")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in FIRST_PARTY for p in (ROOT / top).rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """First-party modules imported anywhere in the file (`from a import b` counts a.b if it is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            out.update(subs or {node.module})
    return {m for m in out if m.split(".")[0] in FIRST_PARTY}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_the_graph_sees_every_implementation(graph):
    for e in registry.REGISTRY.values():
        for workload, target in e.targets().items():
            if workload not in workloads.BUILT_IN:  # an installed package's code is not this repository's
                continue
            assert target.split(":")[0] in graph, f"{e.name} ({workload}): {target} not found under {ROOT}"


def test_implementations_import_only_spec_contract_and_runtimes(graph):
    for name, deps in graph.items():
        package = name.split(".")[0]
        if package not in registry.code_packages():
            continue
        bad = [d for d in deps if d.split(".")[0] != package and not d.startswith(IMPL_MAY_USE)]
        assert not bad, f"{name} imports {bad}; an implementation may use only {IMPL_MAY_USE}"


def test_harness_reaches_implementations_only_through_the_registry(graph):
    for name, deps in graph.items():
        if name.split(".")[0] in ("benchmarks", "shared_data", "reports"):
            bad = [d for d in deps if d.split(".")[0] in registry.code_packages()]
            assert not bad, f"{name} imports the implementation module(s) {bad}; go through benchmarks.registry"


def test_report_imports_of_the_harness_only_the_result_format(graph):
    for name, deps in graph.items():
        if name.split(".")[0] == "reports":
            harness = [d for d in deps if d.split(".")[0] == "benchmarks" and d != "benchmarks.record"]
            assert not harness, f"{name} imports {harness}"
    assert not [d for d in graph["benchmarks.record"] if d.split(".")[0] in ("benchmarks", "reports")]


def test_no_import_cycles(graph):
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep in graph and not state.get(dep):
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
