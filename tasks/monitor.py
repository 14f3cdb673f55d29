"""Drift: an Evidently data-drift report of a new batch against the champion's training
data (and, when the batch is labelled, the champion's live metrics against its test
metrics) → a small typed result, artifacts, an MLflow run and, on drift, a Prefect event.

Evidently (and pandas) appear only in `tasks/stores/evidently.py`,
imported lazily (~10 s).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.common import UNCACHED, artifact_key
from tasks.core.cast import FAILURE_SCHEMA, cast_to_spec
from tasks.core.errors import DataError
from tasks.core.features import encode_target
from tasks.core.metrics import binary_metrics
from tasks.core.prepare import frame_digest, split_quarantine
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec, DriftPolicy
from tasks.events import DRIFT_DETECTED, emit_model_event
from tasks.results import DriftResult, PerformanceDrift
from tasks.stores import registry
from tasks.stores.evidently import check_drift
from tasks.stores.registry import TAG_PREFIX, version_manifest
from tasks.stores.snapshots import atomic_write, read_split
from tasks.stores.workdir import Workdir

MONITORING_SUFFIX = "-monitoring"


# -- the batch ---------------------------------------------------------------------------
def read_batch(path: Path) -> pl.DataFrame:
    """A file of new rows (CSV/Parquet) or a folder of prediction-log Parquet files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            return pl.DataFrame()
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    if not path.is_file():
        raise DataError(f"batch not found: {path}")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False)


def batch_columns(raw: pl.DataFrame, spec: DatasetSpec) -> list[str]:
    """The feature columns (all required) and the target when the batch has it."""
    missing = [c for c in spec.base_features if c not in raw.columns]
    if missing:
        raise DataError(f"the batch lacks the feature columns {missing}")
    return [*spec.base_features, *([spec.target.column] if spec.target.column in raw.columns else [])]


def validate_batch(raw: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows typed like training data, quarantined rows with reasons).

    Features are checked with the training schema. A missing (empty) label is not an
    error — the row is unlabelled — but a label outside the config's labels is."""

    columns = batch_columns(raw, spec)
    raw = raw.select(columns)
    target = spec.target.column
    if target in columns:
        label = pl.col(target).cast(pl.String).str.strip_chars()
        raw = raw.with_columns(pl.when(label == "").then(None).otherwise(label).alias(target))
        features_only = [c for c in columns if c != target]
        failures = pl.concat([find_failures(raw, spec, features_only), label_failures(raw, spec)])
        failures = failures.sort("row", maintain_order=True)
    else:
        failures = find_failures(raw, spec, columns)
    kept, quarantined = split_quarantine(raw, failures)
    typed = cast_to_spec(kept, spec, [c for c in columns if c != target])[0]
    if target in columns:
        typed = typed.with_columns(kept.get_column(target))
    return typed, quarantined


def label_failures(raw: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:

    target = spec.target.column
    bad = raw.with_row_index("row").filter(pl.col(target).is_not_null() & ~pl.col(target).is_in(spec.target.labels))
    return bad.select(
        pl.col("row").cast(pl.Int64),
        pl.lit(target).alias("column"),
        pl.lit(f"isin({spec.target.labels})").alias("check"),
        pl.col(target).cast(pl.String).alias("value"),
    ).cast(FAILURE_SCHEMA)


def labelled_rows(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    target = spec.target.column
    if target not in frame.columns:
        return frame.clear()
    return frame.filter(pl.col(target).is_not_null())


# -- performance drift ---------------------------------------------------------------------
def performance_drift(
    y: list[int] | None, proba, threshold: float, reference: float | None, policy: DriftPolicy
) -> PerformanceDrift:
    """Compare the champion's metric on labelled batch rows with its test-split metric."""

    metric = policy.performance_metric
    rows = 0 if y is None else len(y)
    if rows == 0:
        return PerformanceDrift(metric=metric, rows=0, live=None, reference=reference, drop=None, drifted=False)
    live = binary_metrics(y, proba, threshold)[metric]
    if live != live:  # NaN: one class only in the batch
        return PerformanceDrift(metric=metric, rows=rows, live=None, reference=reference, drop=None, drifted=False)
    drop = None if reference is None else float(reference - live)
    drifted = drop is not None and drop > policy.max_performance_drop
    return PerformanceDrift(metric=metric, rows=rows, live=float(live), reference=reference, drop=drop, drifted=drifted)


def decide(rows: int, share: float, performance: PerformanceDrift | None, policy: DriftPolicy) -> tuple[str, list[str]]:
    """(status, reasons): too few rows is never drift; either kind of drift is drift."""
    if rows < policy.min_rows:
        return "insufficient_data", [f"{rows} valid rows < minimum {policy.min_rows}"]
    reasons = []
    if share >= policy.drift_share:
        reasons.append(f"{share:.0%} of columns drifted (policy: {policy.drift_share:.0%})")
    if performance is not None and performance.drifted:
        reasons.append(
            f"{performance.metric} {performance.live:.4f} on {performance.rows} labelled rows, "
            f"{performance.drop:.4f} below the test {performance.reference:.4f} (policy: {policy.max_performance_drop})"
        )
    return ("drift" if reasons else "no_drift"), reasons


def batch_digest(frame: pl.DataFrame) -> str:

    return frame_digest(frame)[:16]


# -- Prefect tasks -------------------------------------------------------------------------------
@task(name="load-batch", **UNCACHED)
def load_batch_task(path: Path, spec: DatasetSpec, workdir: Path) -> tuple[pl.DataFrame, int, str | None]:
    """Valid typed rows, the number quarantined and where the quarantined rows were written."""

    raw = read_batch(path)
    if raw.is_empty():
        return raw, 0, None
    kept, quarantined = validate_batch(raw, spec)
    where = None
    if quarantined.height:
        digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
        target = Workdir(workdir).quarantine(spec.name, f"batch-{digest}-{batch_digest(raw)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, quarantined.write_parquet)
        where = str(target.resolve())
        get_run_logger().warning("%d batch rows quarantined: %s", quarantined.height, where)
    return kept, quarantined.height, where


@task(name="performance", **UNCACHED)
def performance_task(cfg, model_version: str, current: pl.DataFrame, policy: DriftPolicy) -> PerformanceDrift | None:
    """The champion's live metric on the labelled rows (None when the batch has no labels)."""

    model = registry.load_model(cfg, f"models:/{cfg.model_name}/{model_version}")
    labelled = labelled_rows(current, model.spec)
    if labelled.is_empty():
        return None
    run_id = cfg.client().get_model_version(cfg.model_name, model_version).run_id
    reference = cfg.client().get_run(run_id).data.metrics.get(f"test_{policy.performance_metric}")
    y = encode_target(labelled, model.spec)
    return performance_drift(y, model.predict_proba(labelled), model.threshold, reference, policy)


@task(name="drift-report", **UNCACHED)
def drift_task(
    spec: DatasetSpec,
    model_version: str,
    batch: Path,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    quarantined: tuple[int, str | None],
    performance: PerformanceDrift | None,
    policy: DriftPolicy,
    workdir: Path,
) -> DriftResult:
    base = dict(
        dataset=spec.name,
        model_version=model_version,
        batch=str(Path(batch).resolve()),
        rows=current.height,
        rows_labelled=labelled_rows(current, spec).height,
        rows_quarantined=quarantined[0],
        quarantine_path=quarantined[1],
        performance=performance,
    )
    if current.height < policy.min_rows:
        status, reasons = decide(current.height, 0.0, performance, policy)
        return DriftResult(
            **base, status=status, reasons=reasons, drift_share=0.0, drifted_columns=[], columns=[], report_path=None
        )
    where = Workdir(workdir)
    report = where.monitoring(spec.name) / f"drift-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.html"
    columns, share = check_drift(
        reference, current, spec.base_features, policy, report, where.evidently_workspace, spec.name
    )
    status, reasons = decide(current.height, share, performance, policy)
    return DriftResult(
        **base, status=status, reasons=reasons, drift_share=share, columns=columns,
        drifted_columns=[c.column for c in columns if c.drifted], report_path=str(report.resolve()),
    )  # fmt: skip


@task(name="log-drift-run", **UNCACHED)
def log_drift_task(cfg, result: DriftResult) -> str:
    """One MLflow run per check, in the `<experiment>-monitoring` experiment: scores and the report."""
    from mlflow.entities import Metric, Param, RunTag

    client = cfg.client()
    experiment_id = cfg.experiment_id(f"{cfg.experiment}{MONITORING_SUFFIX}")
    run = client.create_run(experiment_id, run_name=f"drift-{result.dataset}-v{result.model_version}")
    now = datetime.now(UTC)
    stamp = int(now.timestamp() * 1000)
    metrics = {"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns), "rows": result.rows}
    metrics |= {"rows_quarantined": result.rows_quarantined, "rows_labelled": result.rows_labelled}
    metrics |= {f"drift_score.{c.column}": c.score for c in result.columns}
    if result.performance and result.performance.live is not None:
        metrics[f"live_{result.performance.metric}"] = result.performance.live
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
        params=[Param("batch", result.batch[:500]), Param("model_version", result.model_version)],
        tags=[RunTag(f"{TAG_PREFIX}drift_status", result.status), RunTag(f"{TAG_PREFIX}dataset", result.dataset)],
    )
    if result.report_path:
        client.log_artifact(run.info.run_id, result.report_path, "drift")
    client.log_text(run.info.run_id, result.model_dump_json(indent=2), "drift/result.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@task(name="publish-drift", **UNCACHED)
def publish_drift_task(result: DriftResult) -> None:
    key = artifact_key(result.dataset)
    create_table_artifact(
        key=f"{key}-drift",
        table=[c.model_dump() for c in sorted(result.columns, key=lambda c: not c.drifted)]
        or [{"column": "-", "status": result.status}],
        description=f"Drift of {result.rows} rows vs the v{result.model_version} training data: {result.status}, "
        f"share of drifted columns {result.drift_share:.2f}",
    )
    perf = result.performance
    live = (
        f"- {perf.metric}: {perf.live:.4f} on {perf.rows} labelled rows (test: {perf.reference or float('nan'):.4f})\n"
        if perf and perf.live is not None
        else "- performance: no labelled rows\n"
    )
    create_markdown_artifact(
        key=f"{key}-drift-report",
        description=f"{result.status}: {result.drift_share:.0%} of columns drifted vs v{result.model_version}",
        markdown=f"### Drift: **{result.status}** ({result.drift_share:.0%} of columns)\n\n"
        f"- batch: `{result.batch}` ({result.rows} valid rows, {result.rows_quarantined} quarantined)\n"
        f"- drifted: {', '.join(result.drifted_columns) or 'none'}\n{live}"
        f"- why: {'; '.join(result.reasons) or 'within policy'}\n"
        f"- report: [{result.report_path}](file://{result.report_path})\n"
        f"- MLflow run: `{result.mlflow_run_id}`\n",
    )


@task(name="emit-drift-event", **UNCACHED)
def emit_drift_task(result: DriftResult, config: Path, workdir: Path) -> str | None:
    """`model.drift.detected` on resource `model.<dataset>`; the payload is what `retrain` needs."""
    event_id = emit_model_event(
        DRIFT_DETECTED,
        result.dataset,
        {
            "dataset": result.dataset,
            "config": str(Path(config).resolve()),
            "workdir": str(Path(workdir).resolve()),
            "model_version": result.model_version,
            "drift_share": result.drift_share,
            "drifted_columns": result.drifted_columns,
            "reasons": result.reasons,
            "batch": result.batch,
            "rows_labelled": result.rows_labelled,
            "report": result.report_path,
        },
    )
    get_run_logger().warning("drift on %s: %s", result.dataset, "; ".join(result.reasons))
    return event_id


@task(name="reference-data", **UNCACHED)
def reference_task(cfg, model_version: str) -> pl.DataFrame:
    """The champion's own training split: what its inputs looked like."""

    return read_split(version_manifest(cfg, model_version), "train")
