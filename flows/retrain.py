"""Retrain: drift → a fresh snapshot → a challenger → the gate against the champion on the
same fresh test rows → promote and roll out, or record why the champion stays."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from flows.cli import run
from flows.evaluate import evaluate
from flows.naming import named_after_config
from flows.register import register
from flows.rollout import rollout
from flows.train import train
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import RetrainResult
from tasks.retrain import base_version_task, endpoints_task, fresh_snapshot_task, record_task, stale_task


@flow(name="retrain", flow_run_name=named_after_config("retrain"))
def retrain(
    config: Path,
    batch: Path,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    drifted_version: str | None = None,
    reason: str = "",
    n_trials: int | None = None,
    rollout_target: Literal["auto", "none", "process", "docker"] = "auto",
    port: int | None = None,
) -> RetrainResult:
    """Retrain on the champion's data plus a labelled batch; promote and roll out only if the gate passes.

    Args:
        config: dataset config (YAML)
        batch: CSV/Parquet file of new labelled rows (the drifted batch)
        workdir: folder of the snapshots, the default MLflow database and the serving state
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        drifted_version: the model version the drift was measured against (default: the champion)
        reason: why this run started (the drift event)
        n_trials: override the config's Optuna trial budget
        rollout_target: auto (each live endpoint as it runs now), none, process or docker
        port: roll out to this stable port only (default: every live endpoint of the dataset)
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    base = base_version_task(tracking, drifted_version)
    fresh = fresh_snapshot_task(tracking, spec, base, batch, workdir)
    if fresh.skip_reason:
        return record_task(tracking, spec, fresh, reason)
    stale = stale_task(tracking, base, fresh)
    if stale:
        return record_task(tracking, spec, fresh, reason, stale=stale)
    manifest_path = Path(fresh.manifest_path)
    trained = train(
        config=config, manifest_path=manifest_path, workdir=workdir, tracking_uri=tracking_uri, n_trials=n_trials
    )
    evaluate(config=config, run_id=trained.run_id, workdir=workdir, tracking_uri=tracking_uri)
    registered = register(config=config, run_id=trained.run_id, workdir=workdir, tracking_uri=tracking_uri)
    served = [
        rollout(config=config, workdir=workdir, tracking_uri=tracking_uri, target=kind, port=stable_port)
        for kind, stable_port in endpoints_task(tracking, workdir, spec.name, rollout_target, port)
    ]
    return record_task(tracking, spec, fresh, reason, registered=registered, served=served)


if __name__ == "__main__":
    run(retrain)
