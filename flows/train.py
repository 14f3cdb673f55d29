"""Phase 2: a snapshot → baselines and a tuned LightGBM candidate, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.naming import named_after_snapshot
from tasks.data import load_manifest_task, load_spec_task, read_split_task
from tasks.registry import TrainResult, tracking_task
from tasks.train import fit_baselines_task, fit_final_task, log_training_task, matrices_task, tune_task


@flow(name="train", flow_run_name=named_after_snapshot("train"))
def train(
    config: Path,
    manifest_path: Path,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    n_trials: int | None = None,
) -> TrainResult:
    """Fit the baselines, tune LightGBM with Optuna and log the candidate to MLflow.

    Args:
        config: dataset config (YAML)
        manifest_path: snapshot manifest written by the prepare phase
        workdir: folder for the default MLflow database and artifacts
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        n_trials: override the config's Optuna trial budget
    """
    spec = load_spec_task(config, n_trials=n_trials)
    manifest = load_manifest_task(manifest_path)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    train_rows = read_split_task(manifest_path, "train")
    matrices = matrices_task(train_rows, read_split_task(manifest_path, "validation"), spec)
    baselines = fit_baselines_task(matrices, spec, manifest)
    tuning = tune_task(matrices, spec, manifest)
    booster = fit_final_task(matrices, spec, manifest, tuning)
    return log_training_task(tracking, spec, manifest, manifest_path, train_rows, matrices, baselines, tuning, booster)


if __name__ == "__main__":
    from flows.cli import run

    run(train)
