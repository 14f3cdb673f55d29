"""Drift: an Evidently data-drift report of a new batch against the champion's training
data → a small typed result, artifacts and, on drift, a Prefect event.

Evidently (and pandas) appear only inside `drift_report`, imported lazily (~10 s).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from tasks.common import UNCACHED
from tasks.spec import DatasetSpec, cast_to_spec, find_failures

DRIFT_EVENT = "model.drift.detected"


class DriftPolicy(BaseModel):
    min_rows: int = Field(default=200, ge=1, description="fewer rows: 'insufficient data', not drift")
    drift_share: float = Field(default=0.3, gt=0, le=1, description="share of drifted columns that is drift")
    method: str | None = Field(default=None, description="Evidently drift method (default: by column type)")
    threshold: float | None = None


class ColumnDrift(BaseModel):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftResult(BaseModel):
    dataset: str
    model_version: str
    batch: str
    rows: int
    rows_quarantined: int
    status: Literal["drift", "no_drift", "insufficient_data"]
    drift_share: float
    drifted_columns: list[str]
    columns: list[ColumnDrift]
    report_path: str | None
    event_id: str | None = None


def read_batch(path: Path) -> pl.DataFrame:
    """A file of new rows (CSV/Parquet) or a folder of prediction-log Parquet files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            return pl.DataFrame()
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False)


def validate_batch(raw: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, int]:
    """The batch's valid rows, typed like training data (the target too, when present)."""
    columns = [*spec.base_features, *([spec.target.column] if spec.target.column in raw.columns else [])]
    missing = [c for c in spec.base_features if c not in raw.columns]
    if missing:
        raise ValueError(f"the batch lacks the feature columns {missing}")
    from tasks.data import split_quarantine

    raw = raw.select(columns)
    kept, quarantined = split_quarantine(raw, find_failures(raw, spec, columns))
    return cast_to_spec(kept, spec, columns)[0], quarantined.height


def drift_report(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str], policy: DriftPolicy):
    """Run Evidently's DataDriftPreset; returns (snapshot, per-column drift, share drifted)."""
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


# -- Prefect tasks -------------------------------------------------------------------------------
@task(name="load-batch", **UNCACHED)
def load_batch_task(path: Path, spec: DatasetSpec) -> tuple[pl.DataFrame, int]:
    return validate_batch(read_batch(path), spec)


@task(name="drift-report", **UNCACHED)
def drift_task(
    spec: DatasetSpec,
    model_version: str,
    batch: Path,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    quarantined: int,
    policy: DriftPolicy,
    folder: Path,
) -> DriftResult:
    base = dict(dataset=spec.name, model_version=model_version, batch=str(batch), rows=current.height)
    if current.height < policy.min_rows:
        return DriftResult(
            **base, rows_quarantined=quarantined, status="insufficient_data", drift_share=0.0,
            drifted_columns=[], columns=[], report_path=None,
        )  # fmt: skip
    snapshot, columns, share = drift_report(reference, current, spec.base_features, policy)
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"drift-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.html"
    snapshot.save_html(str(report))
    drifted = [c.column for c in columns if c.drifted]
    status = "drift" if share >= policy.drift_share else "no_drift"
    return DriftResult(
        **base, rows_quarantined=quarantined, status=status, drift_share=share,
        drifted_columns=drifted, columns=columns, report_path=str(report.resolve()),
    )  # fmt: skip


@task(name="publish-drift", **UNCACHED)
def publish_drift_task(result: DriftResult) -> None:
    key = result.dataset.lower().replace("_", "-")
    create_table_artifact(
        key=f"{key}-drift",
        table=[c.model_dump() for c in sorted(result.columns, key=lambda c: not c.drifted)]
        or [{"column": "-", "status": result.status}],
        description=f"Drift of {result.rows} rows vs the v{result.model_version} training data: {result.status}, "
        f"share of drifted columns {result.drift_share:.2f}",
    )
    create_markdown_artifact(
        key=f"{key}-drift-report",
        markdown=f"### Drift: **{result.status}** ({result.drift_share:.0%} of columns)\n\n"
        f"- batch: `{result.batch}` ({result.rows} valid rows, {result.rows_quarantined} quarantined)\n"
        f"- drifted: {', '.join(result.drifted_columns) or 'none'}\n"
        f"- report: [{result.report_path}](file://{result.report_path})\n",
    )


@task(name="emit-drift-event", **UNCACHED)
def emit_drift_task(result: DriftResult) -> str | None:
    from prefect.events import emit_event

    event = emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"model.{result.dataset}", "prefect.resource.name": result.dataset},
        payload={
            "dataset": result.dataset,
            "model_version": result.model_version,
            "drift_share": result.drift_share,
            "drifted_columns": result.drifted_columns,
            "batch": result.batch,
            "report": result.report_path,
        },
    )
    get_run_logger().warning("drift on %s: %s", result.dataset, ", ".join(result.drifted_columns))
    return str(event.id) if event else None


@task(name="reference-data", **UNCACHED)
def reference_task(cfg, model_version: str) -> pl.DataFrame:
    """The champion's own training split: what its inputs looked like."""
    from tasks.data import read_split
    from tasks.registry import version_manifest

    return read_split(version_manifest(cfg, model_version), "train")
