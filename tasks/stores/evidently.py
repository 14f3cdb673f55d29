"""Evidently, at the boundary: Polars frames in, typed results out (the Evidently snapshot object
stays here). Evidently (and pandas) are imported only inside these functions (~10 s to import)."""

from __future__ import annotations

import functools
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from tasks.core.monitoring import ColumnDrift
from tasks.core.spec import DriftPolicy


def check_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str],
    policy: DriftPolicy,
    report: Path,
    workspace: Path,
    project: str,
    measured_at: datetime | None = None,
) -> tuple[list[ColumnDrift], float]:
    """Drift of `current` against `reference` per column and as the share of drifted columns; the
    HTML report is written to `report` and the run added to the workspace's `project`."""
    snapshot, per_column, share = _report(reference, current, columns, policy, measured_at)
    report.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report))
    _save_to_workspace(snapshot, workspace, project)
    return per_column, share


def write_data_summary(frame: pl.DataFrame, report: Path) -> Path:
    """Evidently's data summary (DataSummaryPreset: per column its type, missing values and
    distribution) of `frame`, as an HTML report."""
    from evidently import Report
    from evidently.presets import DataSummaryPreset

    snapshot = Report([DataSummaryPreset()]).run(current_data=frame.to_pandas(), reference_data=None)
    report.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report))
    return report


def check_prediction_drift(
    reference: pl.Series,
    current: pl.Series,
    policy: DriftPolicy,
    report: Path,
    workspace: Path,
    project: str,
    measured_at: datetime | None = None,
) -> ColumnDrift:
    """Drift of the served scores (the task's score column: probabilities, predicted values) against
    the champion's own test-split scores (other rows than the training data the features are
    compared with: a report of its own)."""
    return check_value_drift(
        reference, current, policy.prediction_method, policy.prediction_threshold, report, workspace, project,
        measured_at,
    )  # fmt: skip


def check_value_drift(
    reference: pl.Series,
    current: pl.Series,
    method: str | None,
    threshold: float | None,
    report: Path,
    workspace: Path,
    project: str,
    measured_at: datetime | None = None,
) -> ColumnDrift:
    """Evidently's ValueDrift of one column, named by the Series ("score" when it has no name): its
    HTML report written to `report` and the run added to the workspace's `project`."""
    from evidently import Report
    from evidently.metrics import ValueDrift

    column = current.name or "score"
    metric = ValueDrift(column=column, method=method, threshold=threshold)
    frames = [pl.DataFrame({column: s}).to_pandas() for s in (reference, current)]
    snapshot = Report([metric], include_tests=True).run(
        reference_data=frames[0], current_data=frames[1], timestamp=_naive(measured_at)
    )
    (result,) = _column_drifts(snapshot)
    report.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report))
    _save_to_workspace(snapshot, workspace, project)
    return result


def _report(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str], policy: DriftPolicy, measured_at):
    """Evidently's DataDriftPreset: (the snapshot, per-column drift, share drifted)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    options = {"drift_share": policy.drift_share}
    if policy.method:
        options["method"] = policy.method
    if policy.threshold is not None:
        options["threshold"] = policy.threshold
    snapshot = Report([DataDriftPreset(columns=columns, **options)], include_tests=True).run(
        current_data=current.select(columns).to_pandas(),
        reference_data=reference.select(columns).to_pandas(),
        timestamp=_naive(measured_at),
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
    workspace, project_id = _project(folder, project_name)
    return str(workspace.add_run(project_id, snapshot, include_data=False).id)


# -- the dashboard: one small snapshot of figures per monitoring run, line plots over them ------------
FIGURE_METRIC = "LifecycleFigure"
TOP_COLUMNS = 5  # lines a per-column panel draws: the columns that moved most in the latest run


def record_figures(
    folder: Path,
    project_name: str,
    measured_at: datetime,
    figures: dict[str, float],
    most_drifted: list[str],
    keep_days: float,
) -> str:
    """One snapshot of `figures` (the monitor's flat figures: drift share, per-column drift scores,
    prediction and target drift, null rates, label coverage, the live metric), stamped `measured_at`; the
    project's dashboard redrawn over them (per-column lines: `most_drifted` first); snapshots added
    more than `keep_days` ago removed. No rows reach it: only the figures. The snapshot's id."""
    import pandas as pd
    from evidently import Report

    figure = _figure_metric()
    metrics = [figure(name=name, value=float(value)) for name, value in sorted(figures.items())]
    snapshot = Report(metrics).run(current_data=pd.DataFrame({"figure": [0.0]}), timestamp=_naive(measured_at))
    workspace, project_id = _project(folder, project_name)
    snapshot_id = str(workspace.add_run(project_id, snapshot, include_data=False).id)
    if most_drifted or not workspace.get_dashboard(project_id).panels:  # a run of too few rows keeps the last
        workspace.save_dashboard(project_id, _dashboard(figures, most_drifted))
    _prune(workspace, project_id, _naive(measured_at) - timedelta(days=keep_days))
    return snapshot_id


def dashboard_panels(figures: dict[str, float], most_drifted: list[str]) -> list[tuple[str, list[str]]]:
    """(title, figure names) of each line plot, from one run's figures: the per-column panels draw
    the columns that moved most in it (`most_drifted` first; the most nulls)."""

    drifted = [f"drift_score.{c}" for c in most_drifted if f"drift_score.{c}" in figures][:TOP_COLUMNS]
    nulls = sorted((k for k in figures if k.startswith("null_rate.")), key=lambda k: -figures[k])[:TOP_COLUMNS]
    live = [k for k in figures if k.startswith(("live_", "test_"))]
    panels = [
        ("Share of drifted columns", ["drift_share"]),
        ("Drift score of the most drifted columns", drifted),
        ("Prediction drift score", ["prediction_drift_score"]),
        ("Target drift score (arrived labels vs training)", [k for k in ["target_drift_score"] if k in figures]),
        ("Null rate of the columns with most nulls", sorted(nulls)),
        ("Label coverage (share of served rows labelled)", ["label_coverage"]),
        ("Live metric on labelled rows, and on the test split", sorted(live)),
        ("Rows", ["rows", "rows_labelled", "rows_quarantined"]),
    ]
    return [(title, names) for title, names in panels if names]


def _dashboard(figures: dict[str, float], most_drifted: list[str]):
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    panels = [
        line_plot_panel(
            title=title,
            values=[PanelMetric(legend=name, metric=FIGURE_METRIC, metric_labels={"name": name}) for name in names],
            size="half",
        )
        for title, names in dashboard_panels(figures, most_drifted)
    ]
    return DashboardModel(tabs=[DashboardTabModel(title="Monitoring", panels=[p.id for p in panels])], panels=panels)


@functools.cache
def _figure_metric():
    """A metric holding one figure the monitor measured: its name is the series label; its value is
    no parameter (else every run would be a line of its own)."""
    from evidently._pydantic_compat import Field
    from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric

    class LifecycleFigure(SingleValueMetric):
        name: str
        value: float = Field(default=0.0, exclude=True)

    class LifecycleFigureCalculation(SingleValueCalculation[LifecycleFigure]):
        def calculate(self, context, current_data, reference_data):
            return self.result(self.metric.value), None

        def display_name(self) -> str:
            return self.metric.name

    return LifecycleFigure


def project_id(folder: Path, name: str) -> str:
    """The id of the workspace's project `name` (created if missing): its page is `<ui>/projects/<id>`."""
    return str(_project(folder, name)[1])


def _project(folder: Path, name: str):
    """(the workspace, the id of its project `name`), the project created if missing. A new project
    is built aside and moved in whole: a running `evidently ui` sees it complete (its watcher stops
    for good on a project file it reads half-written)."""
    from evidently.ui.workspace import Workspace

    folder.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(folder))
    found = workspace.search_project(name)
    if found:
        return workspace, found[0].id
    staging = folder.parent / f".{folder.name}-new-{uuid.uuid4().hex[:8]}"
    try:
        project = Workspace(str(staging)).create_project(name, description="monitoring runs of the champion")
        (staging / str(project.id)).rename(folder / str(project.id))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Workspace(str(folder)), project.id


def _prune(workspace, project_id, before: datetime) -> int:
    """Remove the project's snapshots added before `before` (by their uuid7 ids' time: no file read)."""
    removed = 0
    for snapshot_id in workspace.list_runs(project_id):
        added = datetime.fromtimestamp((uuid.UUID(str(snapshot_id)).int >> 80) / 1000, UTC).replace(tzinfo=None)
        if added < before:
            workspace.delete_run(project_id, snapshot_id)
            removed += 1
    return removed


def _naive(when: datetime | None) -> datetime:
    """UTC without a zone (default: now): Evidently compares a project's timestamps, its own are naive."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
