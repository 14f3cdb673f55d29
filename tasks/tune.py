"""Tuning: an Optuna study over the config's search space, LightGBM trials with pruning on the
validation split — in one process, or shared by workers (a journal file or a database) that a
Dask cluster runs side by side."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks.common import CACHED, UNCACHED
from tasks.core.spec import DatasetSpec
from tasks.core.task.kinds import task_of
from tasks.results import TrialRecord, TuningResult
from tasks.stores.snapshots import SnapshotManifest, read_split
from tasks.train import Matrices, base_params, lgb_datasets, matrices


def objective_for(m: Matrices, spec: DatasetSpec, threads: int | None = None):
    """The Optuna objective: LightGBM with early stopping and median pruning on the task's tuning
    metric on validation (binary: AUC; regression: RMSE)."""
    import lightgbm as lgb
    import optuna
    from optuna_integration import LightGBMPruningCallback

    t, metric = spec.training, task_of(spec).tuning_metric
    dtrain, dval = lgb_datasets(m)
    fixed = base_params(spec) | ({"num_threads": threads} if threads else {})

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker_pid", os.getpid())
        params = dict(fixed)
        for name, p in t.search_space.items():
            if p.integer:
                params[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
            else:
                params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=t.max_boost_rounds,
            valid_sets=[dval],
            valid_names=["validation"],
            callbacks=[
                lgb.early_stopping(t.early_stopping_rounds, verbose=False),
                LightGBMPruningCallback(trial, metric, valid_name="validation"),
            ],
        )
        trial.set_user_attr("best_iteration", booster.best_iteration)
        return booster.best_score["validation"][metric]

    return objective


def open_study(spec: DatasetSpec, storage=None, study_name: str | None = None, seed_offset: int = 0):
    """Create (or join, with shared storage) the study: the task's direction, seeded TPE, median pruning."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = spec.training
    return optuna.create_study(
        direction=task_of(spec).tuning_direction,
        sampler=optuna.samplers.TPESampler(seed=t.seed + seed_offset),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=t.pruner_warmup_steps),
        storage=storage,
        study_name=study_name,
        load_if_exists=storage is not None,
    )


def tune(
    m: Matrices,
    spec: DatasetSpec,
    on_trial: Callable[[TrialRecord, int], None] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
) -> TuningResult:
    """TPE search (seeded) with median pruning and early stopping on the task's validation metric."""
    import optuna

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial:
            on_trial(_record(trial), len(study.trials))

    study = open_study(spec, storage, study_name)
    started = time.perf_counter()
    study.optimize(
        objective_for(m, spec), n_trials=spec.training.n_trials, timeout=spec.training.timeout_seconds,
        callbacks=[record],
    )  # fmt: skip
    return study_result(study, time.perf_counter() - started)


def study_result(study, seconds: float) -> TuningResult:
    best = study.best_trial
    trials = [_record(tr) for tr in study.trials if tr.state.is_finished()]
    return TuningResult(
        best_params=best.params,
        best_value=best.value,
        best_iteration=best.user_attrs["best_iteration"],
        n_trials=len(trials),
        n_pruned=sum(tr.state == "PRUNED" for tr in trials),
        seconds=seconds,
        trials=trials,
    )


class SharedStudy(BaseModel):
    """Where the workers meet: an Optuna RDB URL (PostgreSQL, MySQL…) or a journal file."""

    storage: str
    name: str

    def open(self):

        if "://" in self.storage:
            return self.storage
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(self.storage))


def shared_study(spec: DatasetSpec, data_version: str, storage: str | None, folder: Path) -> SharedStudy:
    """One study per data version and training config: a rerun resumes it instead of starting over."""
    name = f"{spec.name}-{data_version}-{spec.training_hash}"
    if not storage:
        folder.mkdir(parents=True, exist_ok=True)
        storage = str(folder / f"{name}.journal")
    study = SharedStudy(storage=storage, name=name)
    open_study(spec, study.open(), name)
    return study


def tune_share(m: Matrices, spec: DatasetSpec, study: SharedStudy, worker: int, workers: int) -> int:
    """One worker's part: trials until the study holds the whole budget. Returns trials run here."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    joined = open_study(spec, study.open(), study.name, seed_offset=worker)
    threads = max(1, (os.cpu_count() or 1) // workers)
    before = len(joined.trials)
    budget = MaxTrialsCallback(spec.training.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    finished = [t for t in joined.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(finished) < spec.training.n_trials:
        joined.optimize(
            objective_for(m, spec, threads), n_trials=spec.training.n_trials, callbacks=[budget],
            timeout=spec.training.timeout_seconds,
        )  # fmt: skip
    return len(joined.trials) - before


def _record(trial) -> TrialRecord:
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        params=trial.params,
        best_iteration=trial.user_attrs.get("best_iteration"),
        started_at=trial.datetime_start or datetime.now(UTC),
        finished_at=trial.datetime_complete or datetime.now(UTC),
    )


@task(name="tune", **CACHED)
def tune_task(m: Matrices, spec: DatasetSpec, manifest: SnapshotManifest) -> TuningResult:
    """The Optuna study, with a progress artifact (trials done / budget) and a log line per trial."""
    logger = get_run_logger()
    budget, task_kind = spec.training.n_trials, task_of(spec)
    progress_id = create_progress_artifact(0.0, description=f"Optuna trials done of {budget}")
    best = max if task_kind.tuning_direction == "maximize" else min
    values: list[float] = []

    def on_trial(trial: TrialRecord, done: int) -> None:
        if trial.value is not None and trial.state == "COMPLETE":
            values.append(trial.value)
        logger.info(
            "trial %d/%d %s %s=%s best=%s",
            done,
            budget,
            trial.state.lower(),
            task_kind.tuning_metric,
            f"{trial.value:.4f}" if trial.value is not None else "-",
            f"{best(values):.4f}" if values else "-",
        )
        update_progress_artifact(progress_id, 100.0 * done / budget)

    result = tune(m, spec, on_trial)
    update_progress_artifact(progress_id, 100.0)
    return result


@task(name="shared-study", **UNCACHED)
def shared_study_task(spec: DatasetSpec, manifest: SnapshotManifest, storage: str | None, folder: Path) -> SharedStudy:
    return shared_study(spec, manifest.data_version, storage, folder)


@task(name="tune-worker", **UNCACHED)
def tune_worker_task(spec: DatasetSpec, manifest_path: Path, study: SharedStudy, worker: int, workers: int) -> int:

    m = matrices(read_split(manifest_path, "train"), read_split(manifest_path, "validation"), spec)
    done = tune_share(m, spec, study, worker, workers)
    get_run_logger().info("worker %d (pid %d) ran %d trials of study %s", worker, os.getpid(), done, study.name)
    return done


@task(name="study-result", **UNCACHED)
def study_result_task(spec: DatasetSpec, study: SharedStudy, trials_run: list[int]) -> TuningResult:
    import optuna

    loaded = optuna.load_study(study_name=study.name, storage=study.open())
    finished = [t for t in loaded.trials if t.datetime_start and t.datetime_complete]
    seconds = (
        (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
        if finished
        else 0.0
    )
    return study_result(loaded, seconds)
