"""What runs at inference time — the core package, and nothing else of ours — as shipped inside
the MLflow model (its `code/`) and the bento."""

from __future__ import annotations

import shutil
from pathlib import Path

TASKS = Path(__file__).resolve().parents[1]


def core_files() -> list[Path]:
    """The shipped files, in a fixed order (for a hash of the serving code)."""
    return [TASKS / "__init__.py", *sorted((TASKS / "core").rglob("*.py"))]  # with its task package


def copy_core(folder: Path) -> Path:
    """`folder/tasks/` holding the core package only; returns that folder."""
    target = folder / "tasks"
    for path in core_files():
        dest = target / path.relative_to(TASKS)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    return target
