"""Monitor: a new batch vs the champion's training data → drift report, artifacts, event."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.monitor import (
    DriftPolicy,
    drift_task,
    emit_drift_task,
    load_batch_task,
    log_drift_task,
    performance_task,
    publish_drift_task,
    reference_task,
)
from tasks.package import resolve_alias_task
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import DriftResult
from tasks.settings import drift_policy_task
from tasks.stores.workdir import Workdir


@flow(name="monitor", flow_run_name=named_after_config("monitor"))
def monitor(
    config: Path,
    batch: Path | None = None,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    policy: DriftPolicy | None = None,
) -> DriftResult:
    """Check a batch of new rows for drift against the champion's training data (and, when the
    batch is labelled, the champion's live metric against its test metric).

    Args:
        config: dataset config (YAML)
        batch: CSV/Parquet file of new rows, or a folder of prediction-log files (default: the prediction log)
        workdir: folder of the default MLflow database, the prediction log and the reports
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        policy: drift policy (default: the dataset's `Lifecycle Drift Policy` block over the config's `monitoring`)
    """
    spec = load_spec_task(config)
    policy = drift_policy_task(spec, policy)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    champion = resolve_alias_task(tracking, "champion")
    reference = reference_task(tracking, champion.version)
    source = batch or Workdir(workdir).prediction_log(spec.name)
    current, n_quarantined, quarantine_path = load_batch_task(source, spec, workdir)
    performance = performance_task(tracking, champion.version, current, policy)
    result = drift_task(
        spec,
        champion.version,
        source,
        reference,
        current,
        (n_quarantined, quarantine_path),
        performance,
        policy,
        workdir,
    )
    result = result.model_copy(update={"mlflow_run_id": log_drift_task(tracking, result)})
    publish_drift_task(result)
    if result.status == "drift":
        result = result.model_copy(update={"event_id": emit_drift_task(result, config, workdir)})
    return result


if __name__ == "__main__":
    run(monitor)
