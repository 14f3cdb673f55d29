"""Monitor: the champion's served window (or a batch handed in) vs what the champion knew →
drift report, artifacts, an MLflow run, and on drift an event that retrains."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.monitor import (
    DriftPolicy,
    dashboard_task,
    drift_task,
    emit_drift_task,
    load_batch_task,
    log_drift_task,
    publish_drift_task,
    reference_task,
    score_task,
    served_window_task,
)
from tasks.package import resolve_alias_task
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import DriftResult
from tasks.settings import drift_policy_task


@flow(name="monitor", flow_run_name=named_after_config("monitor"))
def monitor(
    config: Path,
    batch: Path | None = None,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    policy: DriftPolicy | None = None,
) -> DriftResult:
    """Watch the champion: its inputs against its training data, its served scores (probabilities,
    predicted values) against its test-split scores, null rates, and — on rows whose labels have
    arrived — the labels against its training targets and its live metric against its test metric.

    Args:
        config: dataset config (YAML)
        batch: a CSV/Parquet file of new rows (or a folder of them) to judge instead of the served
            window (default: the champion's rows of the prediction log inside the policy's `window`,
            joined with the label store)
        workdir: folder of the default MLflow database, the prediction log, the labels and the reports
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        policy: drift policy (default: the dataset's `Lifecycle Drift Policy` block over the config's `monitoring`)
    """
    spec = load_spec_task(config)
    policy = drift_policy_task(spec, policy)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    champion = resolve_alias_task(tracking, "champion")
    reference, reference_scores = reference_task(tracking, champion.version)
    if batch is None:
        observed = served_window_task(spec, champion.version, policy, workdir)
    else:
        observed = load_batch_task(batch, spec, workdir)
    scores, performance = score_task(tracking, champion.version, observed, policy)
    result = drift_task(
        spec, champion.version, observed, reference, reference_scores, scores, performance, policy, workdir
    )
    result = result.model_copy(update={"mlflow_run_id": log_drift_task(tracking, result)})
    publish_drift_task(result, tracking, policy)
    dashboard_task(result, workdir, policy)
    if result.status == "drift":
        result = result.model_copy(update={"event_id": emit_drift_task(result, config, workdir)})
    return result


if __name__ == "__main__":
    run(monitor)
