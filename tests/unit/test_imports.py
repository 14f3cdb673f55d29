"""The import rules of the house (docs: ../README.md#layout), checked on the real import graph.

grimp reads every import statement, function-local ones included; the served bento (not a
package) is read with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

from tests.conftest import ROOT

OURS = ("tasks", "flows", "blocks", "deployments", "benchmarks")
# what the pure core may not import: orchestration, tracking, serving, drift, tuning, pandas
NOT_IN_CORE = ("prefect", "prefect_docker", "prefect_dask", "mlflow", "bentoml", "evidently", "optuna", "pandas")
# the only libraries imported inside a function, each for the reason given
LAZY = {
    "evidently": "~10 s to import; only the monitor's drift check needs it",
    "mlflow": "~2 s; the CLI's --help and the bento's core never need it",
    "sklearn": "~1 s; only fitting baselines, plots and cross-validation need its estimators",
    "optuna": "~1 s; only tuning needs it",
    "optuna_integration": "only tuning with pruning needs it",
    "lightgbm": "only training and evaluation call it; the core model builds its booster on first use (~80 MB)",
    "matplotlib": "~1 s and a backend choice; only the plots need it",
    "bentoml": "~2 s; only packaging needs it",
    "bentoml_cli": "BentoML's CLI; only the server launcher runs it",
    "skops": "only saving and loading baselines need it",
    "docker": "the Docker SDK; only container back-ends need it",
    "prefect_docker": "only image builds, pushes and container back-ends need it",
    "prefect_dask": "only parallel tuning starts a Dask cluster",
    "sqlalchemy": "only a database source needs it",
    "lleaves": "optional (the compiled booster), only compiling needs it: the core imports on a platform without it",
    "llvmlite": "lleaves' LLVM binding, optional with it; a serving worker loads the compiled object with it alone",
    "pandas": "Evidently's frame type; only building an Evidently report needs it",
    "pandera": "~0.5 s and pandas; only finding and wording failures needs it (a valid file never loads it)",
}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*OURS, include_external_packages=True)


def _ours(graph) -> set[str]:
    return {m for m in graph.modules if m.split(".")[0] in OURS}


def _imports(graph, module: str) -> set[str]:
    return graph.find_modules_directly_imported_by(module)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a module importing itself."""
    nodes = sorted(_ours(graph))
    edges = {m: sorted(_imports(graph, m) & set(nodes)) for m in nodes}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_our_modules():
    """Among the imports that run: a type-only import (under TYPE_CHECKING) is not one — the task
    kinds name the dataset spec in their signatures, while the spec asks the kinds for their facts."""
    assert _cycles(grimp.build_graph(*OURS, include_external_packages=True, exclude_type_checking_imports=True)) == []


def core_violations(graph) -> list[str]:
    """Core modules importing a forbidden library, or anything of ours outside the core."""
    core = {m for m in _ours(graph) if m.startswith("tasks.core")}
    bad = []
    for module in sorted(core):
        for imported in sorted(_imports(graph, module)):
            top = imported.split(".")[0]
            if top in NOT_IN_CORE or (top in OURS and imported not in core | {"tasks"}):
                bad.append(f"{module} → {imported}")
    return bad


STORES_MAY_IMPORT = ("tasks.core", "tasks.stores", "tasks.results")


def downhill_violations(graph) -> list[str]:
    """flows → tasks phases → (stores, core); stores → core (and the typed phase results they
    read and write); tasks never flows; blocks only the core."""
    bad = []
    for module in sorted(_ours(graph)):
        for imported in sorted(m for m in _imports(graph, module) if m.split(".")[0] in OURS):
            if (
                (module.startswith("tasks") and imported.startswith("flows"))
                or (
                    module.startswith("tasks.stores")
                    and not imported.startswith(("tasks.core", "tasks.stores", "tasks.results"))
                )
                or (module.startswith("blocks") and not imported.startswith(("blocks", "tasks.core")))
            ):
                bad.append(f"{module} → {imported}")
    return bad


def test_the_core_imports_nothing_of_orchestration_tracking_serving_or_drift(graph):
    assert any(m.startswith("tasks.core.") for m in graph.modules)
    assert core_violations(graph) == []


def test_imports_run_downhill(graph):
    assert downhill_violations(graph) == []


def _local_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    type_only = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    top = {id(node) for node in [*tree.body, *(n for block in type_only for n in block.body)]}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [(node.lineno, name) for name in names]
    return found


def test_lazy_imports_are_heavy_libraries_with_a_reason_never_our_own_modules():
    # benchmarks import inside the measured function on purpose: each variant pays for what it uses
    sources = [p for package in (*OURS, "bentos") if package != "benchmarks" for p in (ROOT / package).rglob("*.py")]
    bad = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in sources
        for line, name in _local_imports(path)
        if name.split(".")[0] not in LAZY
    ]
    assert bad == []


def test_the_service_imports_only_the_core_of_ours():
    for path in (ROOT / "bentos" / "tabular").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {n for n in names if n and n.split(".")[0] in OURS}
        assert all(n.startswith("tasks.core") for n in ours), (path.name, ours)


def test_a_broken_rule_is_caught():
    """The checks can fail: the core importing Prefect or a phase module, a store importing a
    phase module, a cycle."""
    broken = grimp.build_graph(*OURS, include_external_packages=True, exclude_type_checking_imports=True)
    broken.add_import(importer="tasks.core.spec", imported="prefect")
    broken.add_import(importer="tasks.core.model", imported="tasks.register")
    broken.add_import(importer="tasks.stores.mlflow_model", imported="tasks.train")
    broken.add_import(importer="tasks.core.spec", imported="tasks.core.features")
    assert core_violations(broken) == ["tasks.core.model → tasks.register", "tasks.core.spec → prefect"]
    assert downhill_violations(broken) == ["tasks.stores.mlflow_model → tasks.train"]
    assert ["tasks.core.features", "tasks.core.spec"] in _cycles(broken)
