"""Monitoring: the champion's served window (its logged rows inside the config's window, joined
with the labels that have arrived) or a batch handed in, against what the champion knew — its
training data for the inputs and for the truth (the labels that arrived), its test-split scores for
its output (the task's score column), its test metric for the live metric on labelled rows → a
small typed result, artifacts, an MLflow run and, on drift, a Prefect event naming the window (or
the batch) a retrain should learn from.

Evidently (and pandas) appear only in `tasks/stores/evidently.py`, imported lazily (~10 s).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.common import UNCACHED, artifact_key, markdown_image
from tasks.core.cast import cast_to_spec
from tasks.core.errors import DataError
from tasks.core.feedback import LabelCoverage, ServedWindow, label_coverage, unmatched_labels
from tasks.core.monitoring import (
    ColumnDrift,
    PerformanceDrift,
    decide,
    drift_margin,
    live_metric_name,
    null_rates,
    performance_drift,
    target_drift_counts,
)
from tasks.core.prepare import frame_digest, split_quarantine
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec, DriftPolicy
from tasks.core.tables import read_table
from tasks.core.task.kinds import task_of
from tasks.events import DRIFT_DETECTED, emit_model_event
from tasks.results import DriftResult
from tasks.stores import registry
from tasks.stores.evidently import check_drift, check_prediction_drift, check_value_drift, record_figures
from tasks.stores.registry import TAG_PREFIX, version_manifest
from tasks.stores.served import labelled_window, logged_keys, read_labels, read_log, window_ending_now
from tasks.stores.snapshots import atomic_write, read_split
from tasks.stores.workdir import Workdir

MONITORING_SUFFIX = "-monitoring"


# -- the batch ---------------------------------------------------------------------------
def read_batch(path: Path) -> pl.DataFrame:
    """A file of new rows (CSV/Parquet) or a folder of prediction-log Parquet files."""
    path = Path(path)
    if path.is_dir():
        return read_log(path)
    if not path.is_file():
        raise DataError(f"batch not found: {path}")
    return read_table(path, str(path))


def batch_columns(raw: pl.DataFrame, spec: DatasetSpec) -> list[str]:
    """The feature columns (all required) and the target when the batch has it."""
    missing = [c for c in spec.base_features if c not in raw.columns]
    if missing:
        raise DataError(f"the batch lacks the feature columns {missing}; found {raw.columns}")
    return [*spec.base_features, *([spec.target.column] if spec.target.column in raw.columns else [])]


def validate_batch(raw: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows typed like training data, quarantined rows with reasons).

    Features are checked with the training schema. A missing (empty) label is not an
    error — the row is unlabelled — but a label the target's contract refuses is (not one of the
    labels; not a finite number within the bounds). Labels stay text, as the label store keeps them."""

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
    """The target's contract (as in training) broken by the rows that carry a label."""
    target = spec.target.column
    labelled = raw.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), pl.col(target))
    labelled = labelled.filter(pl.col(target).is_not_null()).get_column("row")
    return find_failures(raw, spec, [target]).filter(pl.col("row").is_in(labelled.implode()))


def labelled_rows(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    target = spec.target.column
    if target not in frame.columns:
        return frame.clear()
    return frame.filter(pl.col(target).is_not_null())


def batch_digest(frame: pl.DataFrame) -> str:
    return frame_digest(frame)[:16]


@dataclass
class Observed:
    """The rows a monitoring run judges, and where they came from."""

    rows: pl.DataFrame
    batch: str | None = None  # a file or folder handed in
    window: ServedWindow | None = None  # or the champion's served window
    coverage: LabelCoverage | None = None
    quarantined: int = 0
    quarantine_path: str | None = None


def prediction_report(report: Path) -> Path:
    """The prediction-drift report beside the data-drift one."""
    return report.with_name(f"{report.stem}-prediction.html")


def target_report(report: Path) -> Path:
    """The target-drift report beside the data-drift one."""
    return report.with_name(f"{report.stem}-target.html")


def drift_columns(spec: DatasetSpec, rows: pl.DataFrame) -> list[str]:
    """The features the rows carry (a sensitive feature is never logged, so never compared)."""
    return [c for c in spec.base_features if c in rows.columns]


# -- Prefect tasks -------------------------------------------------------------------------------
@task(name="load-batch", **UNCACHED)
def load_batch_task(path: Path, spec: DatasetSpec, workdir: Path) -> Observed:
    """Valid typed rows of a batch handed in; quarantined rows written with their reasons."""
    raw = read_batch(path)
    batch = str(Path(path).resolve())
    if raw.is_empty():
        return Observed(rows=raw, batch=batch)
    kept, quarantined = validate_batch(raw, spec)
    where = None
    if quarantined.height:
        digest = hashlib.sha256(batch.encode()).hexdigest()[:8]
        target = Workdir(workdir).quarantine(spec.name, f"batch-{digest}-{batch_digest(raw)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, quarantined.write_parquet)
        where = str(target.resolve())
        get_run_logger().warning("%d batch rows quarantined: %s", quarantined.height, where)
    return Observed(rows=kept, batch=batch, quarantined=quarantined.height, quarantine_path=where)


@task(name="served-window", **UNCACHED)
def served_window_task(spec: DatasetSpec, model_version: str, policy: DriftPolicy, workdir: Path) -> Observed:
    """The champion's rows of the prediction log inside the policy's window, joined with the labels
    that have arrived; how many are labelled, how late, and how many labels match nothing."""
    where = Workdir(workdir)
    log = where.prediction_log(spec.name)
    window = window_ending_now(log, model_version, policy.window)
    rows = labelled_window(where, spec, window)
    unmatched = unmatched_labels(read_labels(where.labels(spec.name)), logged_keys(log, spec.id_column), spec)
    coverage = label_coverage(rows, spec, unmatched) if rows.height else None
    get_run_logger().info(
        "window %s: %d rows of v%s logged %s → %s; %s",
        policy.window, rows.height, model_version, window.start.isoformat(), window.end.isoformat(),
        f"{coverage.labelled} labelled, {unmatched} labels unmatched" if coverage else "nothing served",
    )  # fmt: skip
    return Observed(rows=rows, window=window, coverage=coverage)


@task(name="score", **UNCACHED)
def score_task(
    cfg, model_version: str, observed: Observed, policy: DriftPolicy
) -> tuple[pl.Series, PerformanceDrift | None]:
    """The champion's scores for the rows (its task's score column: as served, when the log has
    them) and its live metric on the labelled ones (None when no row is labelled)."""
    model = registry.load_model(cfg, f"models:/{cfg.model_name}/{model_version}")
    task, rows = model.task, observed.rows
    if rows.is_empty():
        return pl.Series(task.score_column, [], dtype=pl.Float64), None
    if task.score_column not in rows.columns:
        rows = pl.concat([rows, model.predict_frame(rows)], how="horizontal")
    scores = rows.get_column(task.score_column).cast(pl.Float64)
    target = model.spec.target.column
    if target not in rows.columns or rows.get_column(target).null_count() == rows.height:
        return scores, None
    labelled = rows.filter(pl.col(target).is_not_null())
    run_id = cfg.client().get_model_version(cfg.model_name, model_version).run_id
    metric = live_metric_name(task, policy)
    reference = cfg.client().get_run(run_id).data.metrics.get(f"test_{metric}")
    y = task.encode(labelled.get_column(target))
    return scores, performance_drift(task, y, labelled, reference, policy)


@task(name="drift-report", **UNCACHED)
def drift_task(
    spec: DatasetSpec,
    model_version: str,
    observed: Observed,
    reference: pl.DataFrame,
    reference_scores: pl.Series,
    scores: pl.Series,
    performance: PerformanceDrift | None,
    policy: DriftPolicy,
    workdir: Path,
) -> DriftResult:
    current = observed.rows
    base = dict(
        dataset=spec.name,
        model_version=model_version,
        batch=observed.batch,
        window=observed.window,
        rows=current.height,
        rows_labelled=labelled_rows(current, spec).height,
        rows_quarantined=observed.quarantined,
        quarantine_path=observed.quarantine_path,
        coverage=observed.coverage,
        performance=performance,
        measured_at=datetime.now(UTC),
    )
    if current.height < policy.min_rows:
        status, reasons = decide(current.height, 0.0, policy, performance)
        return DriftResult(
            **base, status=status, reasons=reasons, drift_share=0.0, drifted_columns=[], columns=[], report_path=None
        )
    where = Workdir(workdir)
    at = base["measured_at"]
    report = where.monitoring(spec.name) / f"drift-{at:%Y%m%dT%H%M%S%f}.html"
    columns = drift_columns(spec, current)
    per_column, share = check_drift(
        reference, current, columns, policy, report, where.evidently_workspace, spec.name, at
    )
    prediction = check_prediction_drift(
        reference_scores, scores, policy, prediction_report(report), where.evidently_workspace, spec.name, at
    )
    target = target_drift(spec, reference, current, policy, target_report(report), where.evidently_workspace, at)
    counted = target if target_drift_counts(task_of(spec), policy) else None
    nulls = null_rates(reference, current, columns, policy)
    status, reasons = decide(current.height, share, policy, performance, prediction, nulls, counted)
    return DriftResult(
        **base, status=status, reasons=reasons, drift_share=share, columns=per_column, prediction=prediction,
        target=target, null_rates=nulls, drifted_columns=[c.column for c in per_column if c.drifted],
        report_path=str(report.resolve()),
    )  # fmt: skip


def target_drift(
    spec: DatasetSpec, reference: pl.DataFrame, current: pl.DataFrame, policy: DriftPolicy, report: Path,
    workspace: Path, measured_at: datetime,
) -> ColumnDrift | None:  # fmt: skip
    """The arrived labels against the training rows' targets, as the task encodes them (a few
    distinct values are compared as categories, many as numbers), with the data drift's method and
    threshold (default: Evidently's by column type); None below `min_rows` labels (as a batch's
    features need: fewer is too noisy to judge)."""
    labelled = labelled_rows(current, spec)
    if labelled.height < policy.min_rows:
        return None
    task, column = task_of(spec), spec.target.column
    then, now = (pl.Series(column, task.encode(f.get_column(column))) for f in (reference, labelled))
    return check_value_drift(then, now, policy.method, policy.threshold, report, workspace, spec.name, measured_at)


def watched_figures(result: DriftResult) -> dict[str, float]:
    """Every figure a monitoring run measured, flat (MLflow metrics; one point per run)."""
    figures = {"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns), "rows": result.rows}
    figures |= {"rows_quarantined": result.rows_quarantined, "rows_labelled": result.rows_labelled}
    figures |= {f"drift_score.{c.column}": c.score for c in result.columns}
    figures |= {f"null_rate.{n.column}": n.current for n in result.null_rates}
    if result.prediction:
        figures["prediction_drift_score"] = result.prediction.score
    if result.target:
        figures["target_drift_score"] = result.target.score
    if result.coverage:
        figures["label_coverage"] = result.coverage.share
        figures["labels_unmatched"] = result.coverage.labels_unmatched
        if result.coverage.median_delay_seconds is not None:
            figures["label_delay_median_seconds"] = result.coverage.median_delay_seconds
    if result.performance and result.performance.live is not None:
        figures[f"live_{result.performance.metric}"] = result.performance.live
    if result.performance and result.performance.reference is not None:
        figures[f"test_{result.performance.metric}"] = result.performance.reference
    return figures


def source_text(result: DriftResult) -> str:
    if result.window:
        w = result.window
        return f"served window of v{w.model_version}: {w.start:%Y-%m-%d %H:%M:%S} → {w.end:%Y-%m-%d %H:%M:%S} UTC"
    return f"batch {result.batch}"


@task(name="log-drift-run", **UNCACHED)
def log_drift_task(cfg, result: DriftResult) -> str:
    """One MLflow run per check, in the `<experiment>-monitoring` experiment: figures and reports."""
    from mlflow.entities import Metric, Param, RunTag

    client = cfg.client()
    experiment_id = cfg.experiment_id(f"{cfg.experiment}{MONITORING_SUFFIX}")
    run = client.create_run(experiment_id, run_name=f"drift-{result.dataset}-v{result.model_version}")
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in watched_figures(result).items()],
        params=[Param("source", source_text(result)[:500]), Param("model_version", result.model_version)],
        tags=[RunTag(f"{TAG_PREFIX}drift_status", result.status), RunTag(f"{TAG_PREFIX}dataset", result.dataset)],
    )
    if result.report_path:
        client.log_artifact(run.info.run_id, result.report_path, "drift")
        for extra in (prediction_report(Path(result.report_path)), target_report(Path(result.report_path))):
            if extra.exists():
                client.log_artifact(run.info.run_id, str(extra), "drift")
    client.log_text(run.info.run_id, result.model_dump_json(indent=2), "drift/result.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


HISTORY_RUNS = 20  # monitoring runs the drift artifact's chart shows


def monitoring_runs(cfg, dataset: str, limit: int, since: datetime | None = None) -> list:
    """The dataset's monitoring runs in MLflow (newest first, at most `limit`; since `since`)."""
    client = cfg.client()
    experiment = client.get_experiment_by_name(f"{cfg.experiment}{MONITORING_SUFFIX}")
    if experiment is None:
        return []
    query = f"tags.`{TAG_PREFIX}dataset` = '{dataset}'"
    if since is not None:
        query += f" and attributes.start_time >= {int(since.timestamp() * 1000)}"
    return client.search_runs(
        [experiment.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=limit
    )


def drift_history(cfg, dataset: str, limit: int = HISTORY_RUNS) -> list[tuple[datetime, float]]:
    """(time, drift share) of the dataset's last `limit` monitoring runs in MLflow, oldest first."""
    runs = monitoring_runs(cfg, dataset, limit)
    points = [(r.info.start_time, r.data.metrics["drift_share"]) for r in runs if "drift_share" in r.data.metrics]
    return [(datetime.fromtimestamp(ms / 1000, UTC), share) for ms, share in sorted(points)]


def drift_chart(history: list[tuple[datetime, float]], drift_share: float) -> bytes:
    """A small PNG of the share of drifted columns per run, with the policy's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2), dpi=90)
    ax.plot(range(len(history)), [share for _, share in history], marker="o")
    ax.axhline(drift_share, color="tab:red", linestyle="--", linewidth=1, label=f"drift at {drift_share:g}")
    ax.set_xticks(range(len(history)), [f"{t:%m-%d %H:%M}" for t, _ in history], rotation=30, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("drifted share", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


@task(name="publish-drift", **UNCACHED)
def publish_drift_task(result: DriftResult, cfg, policy: DriftPolicy) -> None:
    key = artifact_key(result.dataset)
    watched = [c.model_dump() | {"kind": "feature"} for c in sorted(result.columns, key=lambda c: not c.drifted)]
    if result.target:
        watched.insert(0, result.target.model_dump() | {"kind": "target"})
    if result.prediction:
        watched.insert(0, result.prediction.model_dump() | {"kind": "prediction"})
    create_table_artifact(
        key=f"{key}-drift",
        table=watched or [{"column": "-", "status": result.status}],
        description=f"Drift of {result.rows} rows vs v{result.model_version}: {result.status}, "
        f"share of drifted columns {result.drift_share:.2f}",
    )
    markdown = drift_markdown(result)
    if history := drift_history(cfg, result.dataset):  # this run's included: it is logged first
        chart = markdown_image("share of drifted columns", drift_chart(history, policy.drift_share))
        markdown += f"\n#### Share of drifted columns, last {len(history)} runs\n\n{chart}\n"
    create_markdown_artifact(
        key=f"{key}-drift-report",
        description=f"{result.status}: {result.drift_share:.0%} of columns drifted vs v{result.model_version}",
        markdown=markdown,
    )


def drift_markdown(result: DriftResult) -> str:
    perf, cov, pred, target = result.performance, result.coverage, result.prediction, result.target
    lines = [
        f"### Drift: **{result.status}** ({result.drift_share:.0%} of columns)\n",
        f"- rows: {source_text(result)} ({result.rows} valid rows, {result.rows_quarantined} quarantined)",
        f"- drifted: {', '.join(result.drifted_columns) or 'none'}",
        f"- predictions: {pred.method} {pred.score:.3f} (threshold {pred.threshold:g})" if pred else "- predictions: -",
        f"- target (labels vs training): {target.method} {target.score:.3f} (threshold {target.threshold:g})"
        + (", moved" if target.drifted else "")
        if target
        else "- target: too few labels",
        "- null rates up: "
        + (
            ", ".join(f"{n.column} {n.reference:.1%}→{n.current:.1%}" for n in result.null_rates if n.drifted) or "none"
        ),
        (
            f"- labels: {cov.labelled} of {cov.rows} rows ({cov.share:.0%}), median delay "
            + (f"{cov.median_delay_seconds:.0f} s" if cov.median_delay_seconds is not None else "-")
            + f"; {cov.labels_unmatched} labels match no served row"
        )
        if cov
        else "- labels: -",
        f"- live {perf.metric}: {perf.live:.4f} on {perf.rows} labelled rows "
        f"(test: {perf.reference or float('nan'):.4f})"
        if perf and perf.live is not None
        else "- live metric: no labelled rows",
        f"- why: {'; '.join(result.reasons) or 'within policy'}",
        f"- report: [{result.report_path}](file://{result.report_path})",
        f"- MLflow run: `{result.mlflow_run_id}`",
    ]
    return "\n".join(lines) + "\n"


@task(name="record-dashboard", **UNCACHED)
def dashboard_task(result: DriftResult, workdir: Path, policy: DriftPolicy) -> str:
    """The run's figures as one point of each line on the dataset's Evidently dashboard."""
    workspace = Workdir(workdir).evidently_workspace
    ranked = [c.column for c in sorted(result.columns, key=drift_margin, reverse=True)]
    figures = watched_figures(result)
    return record_figures(workspace, result.dataset, result.measured_at, figures, ranked, policy.dashboard_days)


@task(name="emit-drift-event", **UNCACHED)
def emit_drift_task(result: DriftResult, config: Path, workdir: Path) -> str | None:
    """`model.drift.detected` on resource `model.<dataset>`; the payload is what `retrain` needs:
    the served window (or the batch) to learn from and the version it drifted from."""
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
            "window": result.window.model_dump(mode="json") if result.window else None,
            "rows_labelled": result.rows_labelled,
            "report": result.report_path,
        },
    )
    get_run_logger().warning("drift on %s: %s", result.dataset, "; ".join(result.reasons))
    return event_id


@task(name="reference-data", **UNCACHED)
def reference_task(cfg, model_version: str) -> tuple[pl.DataFrame, pl.Series]:
    """What the champion knew: its training split (its inputs and their targets) and its scores on
    its test split (its output on rows it never trained on)."""
    manifest = version_manifest(cfg, model_version)
    model = registry.load_model(cfg, f"models:/{cfg.model_name}/{model_version}")
    scores = model.predict_scores(read_split(manifest, "test"))
    return read_split(manifest, "train"), pl.Series(model.task.score_column, scores, dtype=pl.Float64)
