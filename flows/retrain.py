"""Retrain: drift → a fresh snapshot (the champion's data + what it served and got labels for, or a
labelled batch) → a challenger → the gate against the champion on the same fresh test rows →
promote and roll out (or package, when nothing serves yet), or record why the champion stays."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from flows.cli import run
from flows.evaluate import evaluate
from flows.naming import named_after_config
from flows.package import package
from flows.register import register
from flows.rollout import rollout
from flows.train import train
from tasks.core.feedback import ServedWindow
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import RetrainResult
from tasks.retrain import (
    base_version_task,
    endpoints_task,
    fresh_snapshot_task,
    record_task,
    stale_task,
    window_task,
)
from tasks.settings import drift_policy_task


@flow(name="retrain", flow_run_name=named_after_config("retrain"))
def retrain(
    config: Path,
    batch: Path | None = None,
    window: ServedWindow | None = None,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    drifted_version: str | None = None,
    reason: str = "",
    n_trials: int | None = None,
    rollout_target: Literal["auto", "none", "process", "docker"] = "auto",
    port: int | None = None,
) -> RetrainResult:
    """Retrain on the champion's data plus new labelled rows; promote and roll out only if the gate passes.

    Args:
        config: dataset config (YAML)
        batch: a CSV/Parquet file of labelled rows to learn from instead of what was served
        window: the served window to learn from (the drift event's); default: the drifted version's
            rows of the prediction log inside the monitoring window, up to now, with their labels
        workdir: folder of the snapshots, the default MLflow database, the logs and the serving state
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        drifted_version: the model version the drift was measured against (default: the champion)
        reason: why this run started (the drift event)
        n_trials: override the config's Optuna trial budget
        rollout_target: auto (each live endpoint as it runs now), none, process or docker
        port: roll out to this stable port only (default: every live endpoint of the dataset)
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    base = base_version_task(tracking, drifted_version or (window.model_version if window else None))
    if batch is None and window is None:
        window = window_task(spec, base, drift_policy_task(spec), workdir)
    fresh = fresh_snapshot_task(tracking, spec, base, batch if batch is not None else window, workdir)
    if fresh.skip_reason:
        return record_task(tracking, spec, fresh, reason)
    stale = stale_task(tracking, base, fresh)
    if stale:
        return record_task(tracking, spec, fresh, reason, stale=stale)
    manifest_path = Path(fresh.manifest_path)
    trained = train(
        config=config, manifest_path=manifest_path, workdir=workdir, tracking_uri=tracking_uri, n_trials=n_trials
    )
    evaluated = evaluate(config=config, run_id=trained.run_id, workdir=workdir, tracking_uri=tracking_uri)
    registered = register(config=config, run_id=trained.run_id, workdir=workdir, tracking_uri=tracking_uri)
    targets = endpoints_task(tracking, workdir, spec.name, rollout_target, port)
    served = [
        rollout(config=config, workdir=workdir, tracking_uri=tracking_uri, target=kind, port=stable_port)
        for kind, stable_port in targets
    ]
    packaged = None
    if registered.promoted and not targets:  # nothing serves yet: `make serve` finds the new version
        packaged = package(config=config, workdir=workdir, tracking_uri=tracking_uri)
    return record_task(
        tracking, spec, fresh, reason, evaluated=evaluated, registered=registered, served=served, packaged=packaged
    )


if __name__ == "__main__":
    run(retrain)
