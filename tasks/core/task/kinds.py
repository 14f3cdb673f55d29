"""Every task kind by its config name (`target.task`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.core.task import Task
from tasks.core.task.binary import Binary
from tasks.core.task.regression import Regression

if TYPE_CHECKING:
    from tasks.core.spec import DatasetSpec

KINDS: dict[str, type[Task]] = {kind.kind: kind for kind in (Binary, Regression)}


def task_of(spec: DatasetSpec) -> Task:
    """The task of a dataset spec."""
    return KINDS[spec.target.task](spec)
