"""Evidently, at the boundary: Polars frames in, typed results out (the Evidently snapshot object
stays here). Evidently (and pandas) are imported only inside these functions (~10 s to import)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.core.spec import DriftPolicy
from tasks.results import ColumnDrift


def check_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str],
    policy: DriftPolicy,
    report: Path,
    workspace: Path,
    project: str,
) -> tuple[list[ColumnDrift], float]:
    """Drift of `current` against `reference` per column and as the share of drifted columns; the
    HTML report is written to `report` and the run added to the workspace's `project`."""
    snapshot, per_column, share = _report(reference, current, columns, policy)
    report.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report))
    _save_to_workspace(snapshot, workspace, project)
    return per_column, share


def _report(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str], policy: DriftPolicy):
    """Evidently's DataDriftPreset: (the snapshot, per-column drift, share drifted)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    options = {"drift_share": policy.drift_share}
    if policy.method:
        options["method"] = policy.method
    if policy.threshold is not None:
        options["threshold"] = policy.threshold
    snapshot = Report([DataDriftPreset(columns=columns, **options)], include_tests=True).run(
        current_data=current.select(columns).to_pandas(), reference_data=reference.select(columns).to_pandas()
    )
    failed = {
        t.metric_config.params.get("column"): t.status.value == "FAIL"
        for t in snapshot.tests_results
        if t.metric_config.params.get("column")
    }
    per_column, share = [], 0.0
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            per_column.append(
                ColumnDrift(
                    column=config["column"],
                    method=config["method"],
                    score=float(metric["value"]),
                    threshold=float(config["threshold"]),
                    drifted=failed.get(config["column"], False),
                )
            )
        elif config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return snapshot, per_column, share


def _save_to_workspace(snapshot, folder: Path, project_name: str) -> str:
    """Add the report to a local Evidently workspace (`evidently ui --workspace <folder>`)."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(folder))
    found = workspace.search_project(project_name)
    project = found[0] if found else workspace.create_project(project_name, description="drift of new batches")
    return str(workspace.add_run(project.id, snapshot, include_data=False).id)
