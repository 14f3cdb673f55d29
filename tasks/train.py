"""Training: honest baselines, a LightGBM candidate tuned by Optuna, the final fit.

Pure functions first (no Prefect, no MLflow); the `@task` wrappers are at the bottom.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks import features, registry
from tasks.common import CACHED, UNCACHED
from tasks.data import SnapshotManifest
from tasks.registry import TrackingConfig, TrainResult
from tasks.spec import DatasetSpec

log = logging.getLogger(__name__)


# -- data -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Matrices:
    """Feature matrices of the train and validation splits (the test split stays out)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: list[str]
    categorical: list[int]


def matrices(train: pl.DataFrame, validation: pl.DataFrame, spec: DatasetSpec) -> Matrices:
    names = spec.feature_names
    return Matrices(
        x_train=features.feature_matrix(train, spec),
        y_train=features.encode_target(train, spec),
        x_val=features.feature_matrix(validation, spec),
        y_val=features.encode_target(validation, spec),
        feature_names=names,
        categorical=[names.index(c) for c in spec.categorical_features],
    )


# -- baselines --------------------------------------------------------------------------
def fit_majority(m: Matrices):
    """Predicts the training share of the positive class for every row."""
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy="prior").fit(m.x_train, m.y_train)


def fit_logistic(m: Matrices, seed: int):
    """Logistic regression on the same features: imputed, scaled, categories one-hot.

    Its regularisation strength is chosen on the validation split, like the candidate's
    parameters, so the comparison is fair."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [i for i in range(len(m.feature_names)) if i not in m.categorical]
    best, best_auc = None, -1.0
    for c in (0.01, 0.1, 1.0, 10.0):
        prep = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                (
                    "cat",
                    make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                    m.categorical,
                ),
            ]
        )
        model = make_pipeline(prep, LogisticRegression(C=c, max_iter=5000, random_state=seed))
        model.fit(m.x_train, m.y_train)
        auc = roc_auc_score(m.y_val, model.predict_proba(m.x_val)[:, 1])
        if auc > best_auc:
            best, best_auc = model, auc
    return best


@dataclass
class Baselines:
    majority_class: object
    logistic_regression: object

    def items(self):
        return {"majority_class": self.majority_class, "logistic_regression": self.logistic_regression}.items()


def fit_baselines(m: Matrices, spec: DatasetSpec) -> Baselines:
    return Baselines(majority_class=fit_majority(m), logistic_regression=fit_logistic(m, spec.training.seed))


# -- LightGBM + Optuna --------------------------------------------------------------------
class TrialRecord(BaseModel):
    number: int
    state: str
    value: float | None
    params: dict[str, float | int]
    best_iteration: int | None
    started_at: datetime
    finished_at: datetime


class TuningResult(BaseModel):
    best_params: dict[str, float | int]
    best_value: float
    best_iteration: int
    n_trials: int
    n_pruned: int
    seconds: float
    trials: list[TrialRecord]


def base_params(spec: DatasetSpec) -> dict:
    t = spec.training
    return {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": t.seed,
        "deterministic": True,
        "force_col_wise": True,
        "bagging_freq": 1,
        "num_threads": t.num_threads or (os.cpu_count() or 1),
    }


def _datasets(m: Matrices):
    import lightgbm as lgb

    params = {"feature_pre_filter": False, "verbosity": -1}
    train = lgb.Dataset(
        m.x_train,
        m.y_train,
        feature_name=m.feature_names,
        categorical_feature=m.categorical,
        params=params,
        free_raw_data=False,
    )
    return train, lgb.Dataset(m.x_val, m.y_val, reference=train, params=params)


def objective_for(m: Matrices, spec: DatasetSpec, threads: int | None = None):
    """The Optuna objective: LightGBM with early stopping and median pruning on validation AUC."""
    import lightgbm as lgb
    import optuna
    from optuna_integration import LightGBMPruningCallback

    t = spec.training
    dtrain, dval = _datasets(m)
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
                LightGBMPruningCallback(trial, "auc", valid_name="validation"),
            ],
        )
        trial.set_user_attr("best_iteration", booster.best_iteration)
        return booster.best_score["validation"]["auc"]

    return objective


def open_study(spec: DatasetSpec, storage=None, study_name: str | None = None, seed_offset: int = 0):
    """Create (or join, with shared storage) the study: seeded TPE, median pruning."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = spec.training
    return optuna.create_study(
        direction="maximize",
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
    """TPE search (seeded) with median pruning and early stopping on the validation AUC."""
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


# -- parallel tuning: workers sharing one study -------------------------------------------
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


def final_params(spec: DatasetSpec, tuning: TuningResult) -> dict:
    return base_params(spec) | tuning.best_params


def fit_final(m: Matrices, spec: DatasetSpec, tuning: TuningResult) -> str:
    """Refit on the training split with the best parameters for the best number of rounds."""
    import lightgbm as lgb

    dtrain, _ = _datasets(m)
    booster = lgb.train(final_params(spec, tuning), dtrain, num_boost_round=max(tuning.best_iteration, 1))
    return booster.model_to_string()


# -- Prefect tasks --------------------------------------------------------------------------
@task(name="find-training-run", **UNCACHED)
def logged_training_task(cfg: TrackingConfig, spec: DatasetSpec, manifest: SnapshotManifest) -> TrainResult | None:
    """The candidate of this data version and training config if MLflow has it: nothing is refit."""
    found = registry.logged_training(cfg, manifest.data_version, spec.training_hash)
    if found:
        get_run_logger().info("candidate already logged as run %s: reusing it", found.run_id)
    return found


@task(name="fit-baselines", **CACHED)
def fit_baselines_task(m: Matrices, spec: DatasetSpec, manifest: SnapshotManifest) -> Baselines:
    return fit_baselines(m, spec)


@task(name="tune", **CACHED)
def tune_task(m: Matrices, spec: DatasetSpec, manifest: SnapshotManifest) -> TuningResult:
    """The Optuna study, with a progress artifact (trials done / budget) and a log line per trial."""
    logger = get_run_logger()
    budget = spec.training.n_trials
    progress_id = create_progress_artifact(0.0, description=f"Optuna trials done of {budget}")
    best = [float("-inf")]

    def on_trial(trial: TrialRecord, done: int) -> None:
        if trial.value is not None and trial.state == "COMPLETE":
            best[0] = max(best[0], trial.value)
        logger.info(
            "trial %d/%d %s auc=%s best=%.4f",
            done,
            budget,
            trial.state.lower(),
            f"{trial.value:.4f}" if trial.value is not None else "-",
            best[0],
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
    from tasks.data import read_split

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


@task(name="fit-final", **CACHED)
def fit_final_task(m: Matrices, spec: DatasetSpec, manifest: SnapshotManifest, tuning: TuningResult) -> str:
    return fit_final(m, spec, tuning)


@task(name="matrices", **UNCACHED)
def matrices_task(train: pl.DataFrame, validation: pl.DataFrame, spec: DatasetSpec) -> Matrices:
    return matrices(train, validation, spec)


def choose_threshold_on_validation(m: Matrices, booster_text: str, spec: DatasetSpec) -> float:
    import lightgbm as lgb

    from tasks.evaluate import choose_threshold

    proba = lgb.Booster(model_str=booster_text).predict(m.x_val)
    return choose_threshold(m.y_val, proba, spec.evaluation.threshold)


@task(name="log-training-run", **UNCACHED)
def log_training_task(
    cfg: TrackingConfig,
    spec: DatasetSpec,
    manifest: SnapshotManifest,
    manifest_path: Path,
    train_frame: pl.DataFrame,
    m: Matrices,
    baselines: Baselines,
    tuning: TuningResult,
    booster_text: str,
) -> TrainResult:
    """Log the candidate to MLflow once: a rerun with the same data and config finds the run."""
    import mlflow
    from sklearn.metrics import roc_auc_score

    from tasks.model import TabularModel, input_example, pip_requirements, signature

    existing = registry.logged_training(cfg, manifest.data_version, spec.training_hash)
    if existing:
        get_run_logger().info("candidate already logged as run %s: reusing it", existing.run_id)
        return existing
    key = registry.training_key(manifest.data_version, spec.training_hash)
    threshold = choose_threshold_on_validation(m, booster_text, spec)
    baseline_auc = {
        name: float(roc_auc_score(m.y_val, b.predict_proba(m.x_val)[:, 1])) for name, b in baselines.items()
    }
    result = dict(
        dataset=spec.name,
        data_version=manifest.data_version,
        manifest_path=str(manifest_path),
        threshold=threshold,
        best_params=tuning.best_params,
        validation_auc=tuning.best_value,
        baselines_validation_auc=baseline_auc,
        n_trials=tuning.n_trials,
        n_pruned=tuning.n_pruned,
    )
    experiment_id = cfg.activate()
    model = TabularModel(
        spec,
        booster_text,
        threshold,
        metadata={
            "data_version": manifest.data_version,
            "spec_hash": spec.spec_hash,
            "training_hash": spec.training_hash,
        },
    )
    run_name = f"train-{spec.name}-{manifest.data_version}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        registry.set_tags(
            cfg,
            run_id,
            {
                "dataset": spec.name,
                "data_version": manifest.data_version,
                "spec_hash": spec.spec_hash,
                "training_hash": spec.training_hash,
                "training_key": key,
                "manifest_path": str(manifest_path),
            },
        )
        mlflow.log_params(
            final_params(spec, tuning)
            | {"best_iteration": tuning.best_iteration, "n_trials": tuning.n_trials, "threshold": threshold}
        )
        registry.log_metrics(
            cfg,
            run_id,
            {"validation_auc": tuning.best_value, "n_pruned": tuning.n_pruned, "tuning_seconds": tuning.seconds}
            | {f"validation_auc_{name}": auc for name, auc in baseline_auc.items()},
        )
        dataset = mlflow.data.from_polars(
            train_frame, source=str(manifest_path), name=f"{spec.name}-train", digest=manifest.data_version
        )
        mlflow.log_input(dataset, context="training", tags={"data_version": manifest.data_version})
        registry.log_trials(cfg, experiment_id, run_id, tuning.trials)
        for name, baseline in baselines.items():
            registry.save_object(cfg, run_id, baseline, f"{name}.joblib")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            code_paths=[str(Path(__file__).parent)],
            pip_requirements=pip_requirements(),
            signature=signature(spec),
            input_example=input_example(train_frame, spec),
            metadata=model.metadata | {"dataset": spec.name, "threshold": str(threshold)},
        )
        registry.set_tags(cfg, run_id, {"model_uri": info.model_uri})
        trained = TrainResult(run_id=run_id, model_uri=info.model_uri, reused_run=False, **result)
        registry.log_json(cfg, run_id, trained.model_dump(), registry.TRAIN_RESULT)
    return trained
