"""Training: honest baselines, the final LightGBM fit with the tuned parameters, the task's decision
fitted on validation (a threshold, an interval), the candidate logged to MLflow once (tuning is
`tasks/tune.py`).

Functions first (LightGBM and scikit-learn, no Prefect, no MLflow); the `@task` wrappers below."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from prefect import get_run_logger, task

from tasks.common import CACHED, UNCACHED, code_revision
from tasks.core import features
from tasks.core.model import TabularModel
from tasks.core.spec import DatasetSpec
from tasks.core.task import Decision
from tasks.core.task.kinds import task_of
from tasks.results import TrainResult, TuningResult
from tasks.stores import registry
from tasks.stores.registry import TrackingConfig
from tasks.stores.snapshots import SnapshotManifest

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
    selection: dict[str, float] | None = None  # with feature selection: each feature's score; kept ones in `selected`
    selected: list[str] | None = None


def matrices(train: pl.DataFrame, validation: pl.DataFrame, spec: DatasetSpec) -> Matrices:
    """The splits' matrices; with `training.feature_selection`, the features it leaves out are blank
    (NaN) in both, so no model fitted on them splits on them, and serving needs no change."""
    names = spec.feature_names
    m = Matrices(
        x_train=features.feature_matrix(train, spec),
        y_train=features.encode_target(train, spec),
        x_val=features.feature_matrix(validation, spec),
        y_val=features.encode_target(validation, spec),
        feature_names=names,
        categorical=[names.index(c) for c in spec.categorical_features],
    )
    rule = spec.training.feature_selection
    if rule is None:
        return m
    scores = feature_scores(m, spec)
    ranked = sorted(names, key=lambda n: (-scores[n], names.index(n)))
    kept = ranked[: rule.top_k] if rule.top_k is not None else [n for n in ranked if scores[n] >= rule.min_score]
    kept = kept or ranked[:1]  # a model needs one feature
    blank = [i for i, n in enumerate(names) if n not in kept]
    x_train, x_val = m.x_train.copy(), m.x_val.copy()
    x_train[:, blank], x_val[:, blank] = np.nan, np.nan
    selected = [n for n in names if n in kept]
    return Matrices(x_train, m.y_train, x_val, m.y_val, names, m.categorical, scores, selected)


def feature_scores(m: Matrices, spec: DatasetSpec) -> dict[str, float]:
    """Each feature's score on the training split alone: mutual information with the target
    (missing values as their own value), or the gain of a quick LightGBM fit."""
    seed = spec.training.seed
    if spec.training.feature_selection.method == "gain":
        import lightgbm as lgb

        dtrain, _ = lgb_datasets(m)
        booster = lgb.train(base_params(spec), dtrain, num_boost_round=100)
        gains = booster.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(m.feature_names, gains, strict=True)}
    x = m.x_train.copy()
    for j in range(x.shape[1]):
        column = x[:, j]
        missing = np.isnan(column)
        if missing.any():
            column[missing] = -1.0 if j in m.categorical else (np.nanmedian(column) if (~missing).any() else 0.0)
    discrete = np.isin(np.arange(x.shape[1]), m.categorical)
    scores = task_of(spec).mutual_information(x, m.y_train, discrete, seed)
    return {n: float(v) for n, v in zip(m.feature_names, scores, strict=True)}


# -- baselines --------------------------------------------------------------------------
Baselines = dict[str, object]  # name (one of the task's `baselines`) → fitted scikit-learn model


def fit_baselines(m: Matrices, spec: DatasetSpec) -> Baselines:
    """The candidate's comparators, on the same rows (the task's: dummies, a linear model, a shallow tree)."""
    return task_of(spec).fit_baselines(m.x_train, m.y_train, m.x_val, m.y_val, m.categorical, spec.training.seed)


def baselines_on_validation(m: Matrices, spec: DatasetSpec, baselines: Baselines) -> dict[str, float]:
    """Each baseline's `validation_metric` on the validation split."""
    task_kind = task_of(spec)
    metric = task_kind.metric_function(task_kind.validation_metric)
    return {name: metric(m.y_val, task_kind.baseline_scores(b, m.x_val)) for name, b in baselines.items()}


# -- LightGBM + Optuna --------------------------------------------------------------------


def lgb_datasets(m: Matrices):
    """LightGBM datasets of the training and validation matrices (the validation one binned like training)."""
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


def base_params(spec: DatasetSpec) -> dict:
    """The task's objective and metric, and what every fit shares (seeded, deterministic)."""
    t = spec.training
    return task_of(spec).lgb_params() | {
        "verbosity": -1,
        "seed": t.seed,
        "deterministic": True,
        "force_col_wise": True,
        "bagging_freq": 1,
        "num_threads": t.num_threads or (os.cpu_count() or 1),
    }


# -- parallel tuning: workers sharing one study -------------------------------------------


def final_params(spec: DatasetSpec, tuning: TuningResult) -> dict:
    return base_params(spec) | tuning.best_params


def fit_final(m: Matrices, spec: DatasetSpec, tuning: TuningResult) -> str:
    """Refit on the training split with the best parameters for the best number of rounds."""
    import lightgbm as lgb

    dtrain, _ = lgb_datasets(m)
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


@task(name="fit-final", **CACHED)
def fit_final_task(m: Matrices, spec: DatasetSpec, manifest: SnapshotManifest, tuning: TuningResult) -> str:
    return fit_final(m, spec, tuning)


@task(name="matrices", **UNCACHED)
def matrices_task(train: pl.DataFrame, validation: pl.DataFrame, spec: DatasetSpec) -> Matrices:
    return matrices(train, validation, spec)


def decision_on_validation(m: Matrices, booster_text: str, spec: DatasetSpec) -> tuple[Decision, dict[str, float]]:
    """The task's decision fitted on the booster's validation outputs (binary: the threshold and,
    with `training.calibration`, a calibrator; regression: the conformal interval), with the figures
    it was chosen by."""
    import lightgbm as lgb

    raw = lgb.Booster(model_str=booster_text).predict(m.x_val)
    return task_of(spec).fit_decision(m.y_val, raw)


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

    existing = registry.logged_training(cfg, manifest.data_version, spec.training_hash)
    if existing:
        get_run_logger().info("candidate already logged as run %s: reusing it", existing.run_id)
        return existing
    task_kind = task_of(spec)
    key = registry.training_key(manifest.data_version, spec.training_hash)
    decision, decision_figures = decision_on_validation(m, booster_text, spec)
    baseline_scores = baselines_on_validation(m, spec, baselines)
    result = dict(
        dataset=spec.name,
        data_version=manifest.data_version,
        manifest_path=str(manifest_path),
        decision=task_kind.decision_json(decision),
        best_params=tuning.best_params,
        validation_metric=task_kind.validation_metric,
        validation_score=tuning.best_value,
        baselines_validation=baseline_scores,
        n_trials=tuning.n_trials,
        n_pruned=tuning.n_pruned,
        selected_features=m.selected,
    )
    selection = {"selected_features": ",".join(m.selected)} if m.selected is not None else {}
    experiment_id = cfg.activate()
    provenance = {
        "data_version": manifest.data_version,
        "spec_hash": spec.spec_hash,
        "training_hash": spec.training_hash,
    }
    model = TabularModel(spec, booster_text, decision, metadata=provenance | code_revision() | selection)
    decision_tags = task_kind.decision_tags(decision)
    validation = f"validation_{task_kind.tuning_metric}"  # MLflow's name, as each trial logs it
    run_name = f"train-{spec.name}-{manifest.data_version}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        registry.set_tags(
            cfg,
            run_id,
            {"dataset": spec.name, "training_key": key, "manifest_path": str(manifest_path)}
            | provenance
            | code_revision(),
        )
        mlflow.log_params(
            final_params(spec, tuning)
            | {"best_iteration": tuning.best_iteration, "n_trials": tuning.n_trials}
            | decision_tags
        )
        registry.log_metrics(
            cfg,
            run_id,
            {validation: tuning.best_value, "n_pruned": tuning.n_pruned, "tuning_seconds": tuning.seconds}
            | {f"{validation}_{name}": score for name, score in baseline_scores.items()}
            | decision_figures,
        )
        dataset = mlflow.data.from_polars(
            train_frame, source=str(manifest_path), name=f"{spec.name}-train", digest=manifest.data_version
        )
        mlflow.log_input(dataset, context="training", tags={"data_version": manifest.data_version})
        registry.log_trials(cfg, experiment_id, run_id, tuning.trials, validation)
        if m.selection is not None:  # every feature's score on the training split, and which were kept
            chosen = {"rule": spec.training.feature_selection.model_dump(), "scores": m.selection, "kept": m.selected}
            registry.log_json(cfg, run_id, chosen, "feature_selection.json")
        for name, baseline in baselines.items():
            registry.save_baseline(cfg, run_id, baseline, name)
        info = registry.log_model(
            cfg, run_id, model, train_frame, metadata=model.metadata | {"dataset": spec.name} | decision_tags
        )
        registry.set_tags(cfg, run_id, {"model_uri": info.model_uri})
        trained = TrainResult(run_id=run_id, model_uri=info.model_uri, reused_run=False, **result)
        registry.log_json(cfg, run_id, trained.model_dump(), registry.TRAIN_RESULT)
    return trained
