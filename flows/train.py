"""Phase 2: a snapshot → baselines and a tuned LightGBM candidate, tracked in MLflow."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_snapshot
from tasks.core.spec import DatasetSpec
from tasks.prepare import load_manifest_task, load_spec_task, read_split_task
from tasks.register import tracking_task
from tasks.results import TrainResult, TuningResult
from tasks.stores.snapshots import SnapshotManifest
from tasks.stores.workdir import Workdir
from tasks.train import fit_baselines_task, fit_final_task, log_training_task, logged_training_task, matrices_task
from tasks.tune import shared_study_task, study_result_task, tune_task, tune_worker_task


@flow(name="train", flow_run_name=named_after_snapshot("train"))
def train(
    config: Path,
    manifest_path: Path,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    optuna_storage: str | None = None,
) -> TrainResult:
    """Fit the baselines, tune LightGBM with Optuna and log the candidate to MLflow
    (once per data version and training config: a re-run reuses the logged candidate).

    Args:
        config: dataset config (YAML)
        manifest_path: snapshot manifest written by the prepare phase
        workdir: folder for the default MLflow database and artifacts
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        n_trials: override the config's Optuna trial budget
        workers: Optuna workers sharing one study, run in parallel by a Dask cluster (1: in-process)
        optuna_storage: the shared study's storage, e.g. postgresql://… (default: a journal file in the workdir;
            LIFECYCLE_OPTUNA_STORAGE)
    """
    spec = load_spec_task(config, n_trials=n_trials)
    manifest = load_manifest_task(manifest_path)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    logged = logged_training_task(tracking, spec, manifest)
    if logged:
        return logged
    train_rows = read_split_task(manifest_path, "train")
    matrices = matrices_task(train_rows, read_split_task(manifest_path, "validation"), spec)
    baselines = fit_baselines_task(matrices, spec, manifest)
    if workers > 1:
        storage = optuna_storage or os.environ.get("LIFECYCLE_OPTUNA_STORAGE")
        tuning = tune_in_parallel(spec, manifest, manifest_path, workers, storage, Workdir(workdir).optuna)
    else:
        tuning = tune_task(matrices, spec, manifest)
    booster = fit_final_task(matrices, spec, manifest, tuning)
    return log_training_task(tracking, spec, manifest, manifest_path, train_rows, matrices, baselines, tuning, booster)


def tune_in_parallel(
    spec: DatasetSpec, manifest: SnapshotManifest, manifest_path: Path, workers: int, storage: str | None, folder: Path
) -> TuningResult:
    """The `tune-parallel` subflow on a local Dask cluster of `workers` processes: the same code
    runs on a remote Dask cluster (`DaskTaskRunner(address=…)`) or Kubernetes (dask-kubernetes)."""
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    return tune_parallel.with_options(task_runner=runner)(spec, manifest, manifest_path, workers, storage, folder)


@flow(name="tune-parallel", flow_run_name=named_after_snapshot("tune-parallel"))
def tune_parallel(
    spec: DatasetSpec, manifest: SnapshotManifest, manifest_path: Path, workers: int, storage: str | None, folder: Path
) -> TuningResult:
    """Optuna workers sharing one study; each reads the snapshot itself (nothing big is shipped)."""
    study = shared_study_task(spec, manifest, storage, folder)
    shares = [tune_worker_task.submit(spec, manifest_path, study, worker, workers) for worker in range(workers)]
    return study_result_task(spec, study, [share.result() for share in shares])


if __name__ == "__main__":
    run(train)
