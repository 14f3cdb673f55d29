"""Training: honest baselines, the final LightGBM fit with the tuned parameters, the threshold
chosen on validation, the candidate logged to MLflow once (tuning is `tasks/tune.py`).

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
from tasks.core.calibration import Calibrator, calibrate
from tasks.core.gate import BASELINES
from tasks.core.metrics import choose_threshold
from tasks.core.model import TabularModel
from tasks.core.spec import DatasetSpec
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
    """Each feature's score on the training split alone: mutual information with the label
    (missing values as their own value), or the gain of a quick LightGBM fit."""
    seed = spec.training.seed
    if spec.training.feature_selection.method == "gain":
        import lightgbm as lgb

        dtrain, _ = lgb_datasets(m)
        booster = lgb.train(base_params(spec), dtrain, num_boost_round=100)
        gains = booster.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(m.feature_names, gains, strict=True)}
    from sklearn.feature_selection import mutual_info_classif

    x = m.x_train.copy()
    for j in range(x.shape[1]):
        column = x[:, j]
        missing = np.isnan(column)
        if missing.any():
            column[missing] = -1.0 if j in m.categorical else (np.nanmedian(column) if (~missing).any() else 0.0)
    discrete = np.isin(np.arange(x.shape[1]), m.categorical)
    scores = mutual_info_classif(x, m.y_train, discrete_features=discrete, random_state=seed)
    return {n: float(v) for n, v in zip(m.feature_names, scores, strict=True)}


# -- baselines --------------------------------------------------------------------------
def fit_dummy(m: Matrices, strategy: str, seed: int):
    """scikit-learn's dummy: `prior` gives every row the training share of positives (the
    majority class's ranking), `stratified` draws labels at that share, `uniform` at 1/2."""
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy=strategy, random_state=seed).fit(m.x_train, m.y_train)


def fit_tree(m: Matrices, seed: int):
    """A shallow decision tree (depth 4) on the same features, missing values imputed."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=4, min_samples_leaf=20, random_state=seed)
    return make_pipeline(SimpleImputer(strategy="median"), tree).fit(m.x_train, m.y_train)


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


Baselines = dict[str, object]  # name (one of `BASELINES`) → fitted scikit-learn model


def fit_baselines(m: Matrices, spec: DatasetSpec) -> Baselines:
    """The candidate's comparators, on the same rows: dummies, a linear model and a shallow tree."""
    seed = spec.training.seed
    fitted = {
        "majority_class": fit_dummy(m, "prior", seed),
        "stratified": fit_dummy(m, "stratified", seed),
        "uniform": fit_dummy(m, "uniform", seed),
        "logistic_regression": fit_logistic(m, seed),
        "decision_tree": fit_tree(m, seed),
    }
    return {name: fitted[name] for name in BASELINES}


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


def threshold_on_validation(m: Matrices, booster_text: str, spec: DatasetSpec) -> tuple[float, Calibrator | None, dict]:
    """The decision threshold chosen on the validation split and, with `training.calibration`, the
    calibrator of the booster's validation probabilities (None when it does not lower the log loss
    out of fold; the threshold is then chosen on calibrated ones) with the figures it was judged by."""
    import lightgbm as lgb

    proba = lgb.Booster(model_str=booster_text).predict(m.x_val)
    calibrator, figures = None, {}
    if spec.training.calibration != "none":
        calibrator, figures = calibrate(spec.training.calibration, m.y_val, proba, spec.training.seed)
        proba = proba if calibrator is None else calibrator.apply(proba)
    return choose_threshold(m.y_val, proba, spec.evaluation.threshold), calibrator, figures


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

    existing = registry.logged_training(cfg, manifest.data_version, spec.training_hash)
    if existing:
        get_run_logger().info("candidate already logged as run %s: reusing it", existing.run_id)
        return existing
    key = registry.training_key(manifest.data_version, spec.training_hash)
    threshold, calibrator, calibration = threshold_on_validation(m, booster_text, spec)
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
        selected_features=m.selected,
    )
    selection = {"selected_features": ",".join(m.selected)} if m.selected is not None else {}
    experiment_id = cfg.activate()
    model = TabularModel(
        spec,
        booster_text,
        threshold,
        metadata={
            "data_version": manifest.data_version,
            "spec_hash": spec.spec_hash,
            "training_hash": spec.training_hash,
        }
        | code_revision()
        | selection
        | ({"calibrator": calibrator.method} if calibrator else {}),
        calibrator=calibrator,
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
            }
            | code_revision(),
        )
        mlflow.log_params(
            final_params(spec, tuning)
            | {"best_iteration": tuning.best_iteration, "n_trials": tuning.n_trials, "threshold": threshold}
        )
        registry.log_metrics(
            cfg,
            run_id,
            {"validation_auc": tuning.best_value, "n_pruned": tuning.n_pruned, "tuning_seconds": tuning.seconds}
            | {f"validation_auc_{name}": auc for name, auc in baseline_auc.items()}
            | calibration,
        )
        dataset = mlflow.data.from_polars(
            train_frame, source=str(manifest_path), name=f"{spec.name}-train", digest=manifest.data_version
        )
        mlflow.log_input(dataset, context="training", tags={"data_version": manifest.data_version})
        registry.log_trials(cfg, experiment_id, run_id, tuning.trials)
        if m.selection is not None:  # every feature's score on the training split, and which were kept
            chosen = {"rule": spec.training.feature_selection.model_dump(), "scores": m.selection, "kept": m.selected}
            registry.log_json(cfg, run_id, chosen, "feature_selection.json")
        for name, baseline in baselines.items():
            registry.save_baseline(cfg, run_id, baseline, name)
        info = registry.log_model(
            cfg,
            run_id,
            model,
            train_frame,
            metadata=model.metadata | {"dataset": spec.name, "threshold": str(threshold)},
        )
        registry.set_tags(cfg, run_id, {"model_uri": info.model_uri})
        trained = TrainResult(run_id=run_id, model_uri=info.model_uri, reused_run=False, **result)
        registry.log_json(cfg, run_id, trained.model_dump(), registry.TRAIN_RESULT)
    return trained
