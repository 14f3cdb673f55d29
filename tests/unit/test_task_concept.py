"""The task is one concept: phases, the service and the monitor ask `task_of(spec)` and never
test which kind it is. Only the task package (and the config models that declare each kind's
target) may name a kind or reach for a kind's own fields."""

from __future__ import annotations

import ast
import subprocess

from tasks.core.task.kinds import KINDS
from tests.conftest import ROOT

KIND_MODULES = "tasks/core/task/"
CODE = ("tasks/", "flows/", "bentos/", "benchmarks/", "blocks/", "deployments/")
KIND_NAMES = set(KINDS) | {"multiclass"}
KIND_FIELDS = {"positive", "labels", "min", "max"}  # one kind's target fields: reached only through the task


def _offences(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):  # `x == "regression"`, `task.kind in (...)`, `... .kind == ...`
            parts = [node.left, *node.comparators]
            names = {p.value for p in parts if isinstance(p, ast.Constant)}
            names |= {e.value for p in parts if isinstance(p, ast.Tuple | ast.List | ast.Set) for e in p.elts
                      if isinstance(e, ast.Constant)}  # fmt: skip
            task_kind = [p for p in parts if isinstance(p, ast.Attribute) and p.attr in ("kind", "task")
                         and "task" in ast.unparse(p)]  # fmt: skip
            if names & KIND_NAMES or task_kind:
                found.append((node.lineno, "compares a task kind"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            classes = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
            if any(kind.__name__ in classes for kind in KINDS.values()):
                found.append((node.lineno, f"isinstance of a task kind ({classes})"))
        elif isinstance(node, ast.Attribute) and node.attr in KIND_FIELDS:
            owner = ast.unparse(node.value)
            if owner.endswith("target"):  # spec.target.positive, SPEC.target.labels, ...
                found.append((node.lineno, f"reads {owner}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(KIND_MODULES.replace("/", ".")[:-1]):
            modules = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            if any(m.rsplit(".", 1)[-1] in KINDS for m in modules):
                found.append((node.lineno, f"imports a task kind's module ({node.module})"))
    return found


def test_no_code_outside_the_task_package_branches_on_the_task_kind():
    files = subprocess.run(["git", "ls-files", *CODE], cwd=ROOT, capture_output=True, text=True, check=True)
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", *CODE], cwd=ROOT, capture_output=True, text=True
    )
    offences = []
    for name in sorted(set(files.stdout.split()) | set(untracked.stdout.split())):
        if not name.endswith(".py") or name.startswith(KIND_MODULES):
            continue
        tree = ast.parse((ROOT / name).read_text(), name)
        offences += [f"{name}:{line}: {what}" for line, what in _offences(tree)]
    assert not offences, "ask the task (tasks/core/task/) instead:\n" + "\n".join(offences)


def test_the_check_finds_what_it_looks_for():
    code = """
if task.kind == "regression": pass
if spec.target.task in ("binary",): pass
isinstance(task, Binary)
y = spec.target.positive
from tasks.core.task.regression import Interval
"""
    assert sorted(line for line, _ in _offences(ast.parse(code))) == [2, 3, 4, 5, 6]
