"""Evidently, at the boundary: Polars frames in, typed results out (the Evidently snapshot object
stays here). Evidently (and pandas) are imported only inside these functions (~10 s to import)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.core.monitoring import ColumnDrift
from tasks.core.spec import DriftPolicy

PREDICTION_COLUMN = "predicted_probability"


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


def check_prediction_drift(
    reference: pl.Series, current: pl.Series, policy: DriftPolicy, report: Path, workspace: Path, project: str
) -> ColumnDrift:
    """Drift of the served probabilities against the champion's own test-split predictions (other
    rows than the training data the features are compared with: a report of its own)."""
    from evidently import Report
    from evidently.metrics import ValueDrift

    metric = ValueDrift(
        column=PREDICTION_COLUMN, method=policy.prediction_method, threshold=policy.prediction_threshold
    )
    frames = [pl.DataFrame({PREDICTION_COLUMN: s.cast(pl.Float64)}).to_pandas() for s in (reference, current)]
    snapshot = Report([metric], include_tests=True).run(reference_data=frames[0], current_data=frames[1])
    (result,) = _column_drifts(snapshot)
    report.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report))
    _save_to_workspace(snapshot, workspace, project)
    return result


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
    share = next(
        float(m["value"]["share"])
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith("DriftedColumnsCount")
    )
    return snapshot, _column_drifts(snapshot), share


def _column_drifts(snapshot) -> list[ColumnDrift]:
    failed = {
        t.metric_config.params.get("column"): t.status.value == "FAIL"
        for t in snapshot.tests_results
        if t.metric_config.params.get("column")
    }
    return [
        ColumnDrift(
            column=m["config"]["column"],
            method=m["config"]["method"],
            score=float(m["value"]),
            threshold=float(m["config"]["threshold"]),
            drifted=failed.get(m["config"]["column"], False),
        )
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    ]


def _save_to_workspace(snapshot, folder: Path, project_name: str) -> str:
    """Add the report to a local Evidently workspace (`evidently ui --workspace <folder>`)."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(folder))
    found = workspace.search_project(project_name)
    project = found[0] if found else workspace.create_project(project_name, description="drift of new batches")
    return str(workspace.add_run(project.id, snapshot, include_data=False).id)
