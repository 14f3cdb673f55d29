"""Training a regression model on a sample of the bundled diamonds table: LightGBM's regression
objective, a study that minimizes the validation RMSE (resumable when shared), the four baselines,
the conformal half-width fitted on validation, feature selection by mutual information with a
numeric target, and the candidate logged to MLflow with a task-neutral result."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from tasks import train, tune
from tasks.core.cast import clean
from tasks.core.features import add_features
from tasks.core.prepare import QuarantineReport, assign_splits, split_quarantine
from tasks.core.schema import find_failures
from tasks.core.spec import FeatureSelection, load_spec
from tasks.core.task.kinds import task_of
from tasks.core.task.regression import Interval, conformal_halfwidth, rmse
from tasks.stores import registry
from tasks.stores.snapshots import fingerprint_source, read_source, read_split, write_snapshot
from tests.conftest import CONFIGS

ROWS = 2000


@pytest.fixture(scope="module")
def diamonds(tmp_path_factory):
    """A seeded sample of the table, prepared as the prepare phase does (real validation and split)."""
    folder = tmp_path_factory.mktemp("diamonds")
    full = load_spec(CONFIGS / "diamonds.yaml")
    sample = pl.read_csv(full.resolve(full.source.path), infer_schema=False).sample(ROWS, seed=7)
    sample.write_csv(folder / "diamonds.csv")
    spec = load_spec(CONFIGS / "diamonds.yaml", source=folder / "diamonds.csv", n_trials=5)
    quick = {"num_threads": 2, "max_boost_rounds": 300, "early_stopping_rounds": 20}
    spec = spec.model_copy(update={"training": spec.training.model_copy(update=quick)})
    raw = read_source(spec)
    failures = find_failures(raw, spec)
    kept, quarantined = split_quarantine(raw, failures)
    report = QuarantineReport(path=str(folder / "quarantine.parquet"), rows_in=raw.height,
                              rows_quarantined=quarantined.height, max_fraction=0.05, top_checks=[])  # fmt: skip
    split = assign_splits(add_features(clean(kept, spec), spec), spec)
    manifest, manifest_path = write_snapshot(split, spec, fingerprint_source(spec), report, folder / "work")
    parts = {s: read_split(manifest_path, s) for s in ("train", "validation")}
    return spec, manifest, manifest_path, parts, train.matrices(parts["train"], parts["validation"], spec)


@pytest.fixture(scope="module")
def tuned(diamonds):
    spec, _, _, _, m = diamonds
    tuning = tune.tune(m, spec)
    return tuning, train.fit_final(m, spec, tuning)


@pytest.mark.parametrize(("objective", "lgb"), [(None, "regression"), ("l2", "regression"),
                                                ("l1", "regression_l1"), ("huber", "huber")])  # fmt: skip
def test_the_objective_is_lightgbms_regression_loss_and_the_metric_rmse(diamonds, objective, lgb):
    spec = diamonds[0]
    chosen = spec.model_copy(update={"training": spec.training.model_copy(update={"objective": objective})})
    params = train.base_params(chosen)
    assert params["objective"] == lgb and params["metric"] == "rmse" and params["seed"] == spec.training.seed


def test_the_study_minimizes_the_validation_rmse_and_the_refit_model_scores_its_best(diamonds, tuned):
    import lightgbm as lgb
    from optuna.study import StudyDirection

    spec, _, _, _, m = diamonds
    tuning, booster_text = tuned
    assert tune.open_study(spec).direction == StudyDirection.MINIMIZE
    complete = [t.value for t in tuning.trials if t.state == "COMPLETE"]
    assert tuning.n_trials == 5 and tuning.best_value == min(complete)
    # the final fit: the best parameters for the best number of rounds, on the same rows
    predicted = lgb.Booster(model_str=booster_text).predict(m.x_val)
    assert rmse(m.y_val, predicted) == pytest.approx(tuning.best_value, rel=1e-6)
    assert tuning.best_value < 0.2 * float(np.std(m.y_val))  # price is learnable: far below the spread


def test_a_shared_study_minimizes_and_resumes_where_it_stopped(diamonds, tmp_path):
    spec, manifest, _, _, m = diamonds
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"n_trials": 2})})
    study = tune.shared_study(short, manifest.data_version, None, tmp_path)
    assert tune.tune_share(m, short, study, worker=0, workers=2) == 2
    assert tune.tune_share(m, short, study, worker=1, workers=2) == 0  # the budget is spent: nothing rerun
    resumed = tune.open_study(short, study.open(), study.name)
    values = [t.value for t in resumed.trials if t.value is not None]
    assert resumed.best_value == min(values)


def test_the_four_baselines_are_fitted_named_and_honest(diamonds, tuned):
    from sklearn.linear_model import Ridge

    from tasks.core.baselines import LINEAR_STRENGTHS, linear_model

    spec, _, _, _, m = diamonds
    baselines = train.fit_baselines(m, spec)
    assert list(baselines) == ["mean", "median", "linear", "decision_tree"]
    scores = train.baselines_on_validation(m, spec, baselines)
    x = m.x_val[:3]
    assert np.allclose(baselines["mean"].predict(x), m.y_train.mean())
    assert np.allclose(baselines["median"].predict(x), np.median(m.y_train))
    # ridge's alpha is the one with the lowest validation RMSE of the candidates
    task = task_of(spec)
    by_alpha = {}
    for alpha in LINEAR_STRENGTHS:
        alone = linear_model(task, Ridge, m.x_train, m.y_train, m.x_val, m.y_val, m.categorical, strengths=(alpha,))
        by_alpha[alpha] = rmse(m.y_val, alone.predict(m.x_val))
    assert baselines["linear"].steps[-1][1].alpha == min(by_alpha, key=by_alpha.get)
    assert scores["linear"] == min(by_alpha.values())
    assert baselines["decision_tree"].steps[-1][1].get_depth() <= 4
    # the dummies know nothing, the others learn something, the candidate more than any
    assert min(scores["mean"], scores["median"]) > max(scores["linear"], scores["decision_tree"])
    assert max(scores["linear"], scores["decision_tree"]) > tuned[0].best_value


def test_the_conformal_halfwidth_is_the_right_order_statistic_of_validation_residuals(diamonds):
    spec = diamonds[0]
    at = {c: spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"interval_coverage": c})})
          for c in (0.5, 0.8, 0.99, None)}  # fmt: skip
    y, predicted = np.array([10.0, 20.0, 30.0, 40.0, 50.0]), np.array([11.0, 18.0, 33.0, 36.0, 49.5])
    # |residuals| sorted: 0.5, 1, 2, 3, 4 (n = 5): rank ⌈(n + 1)·coverage⌉
    half, figures = task_of(at[0.5]).fit_decision(y, predicted)  # rank 3
    assert half == Interval(halfwidth=2.0, coverage=0.5) and figures == {"validation_interval_halfwidth": 2.0}
    assert task_of(at[0.8]).fit_decision(y, predicted)[0].halfwidth == 4.0  # rank ⌈4.8⌉ = 5
    assert task_of(at[0.99]).fit_decision(y, predicted)[0].halfwidth == 4.0  # rank 6 > n: the largest
    assert conformal_halfwidth(np.array([-3.0, 1.0, 2.0]), 0.5) == 2.0  # rank 2 of 1, 2, 3
    none, figures = task_of(at[None]).fit_decision(y, predicted)
    assert none == Interval() and figures == {} and task_of(at[None]).decision_tags(none) == {}


def test_the_decision_on_validation_covers_the_validation_rows_as_asked(diamonds, tuned):
    import lightgbm as lgb

    spec, _, _, _, m = diamonds
    decision, figures = train.decision_on_validation(m, tuned[1], spec)
    residuals = np.abs(m.y_val - lgb.Booster(model_str=tuned[1]).predict(m.x_val))
    n = len(residuals)
    assert decision.coverage == 0.9 and figures["validation_interval_halfwidth"] == decision.halfwidth
    assert decision.halfwidth == np.sort(residuals)[math.ceil((n + 1) * 0.9) - 1]
    assert 0.9 <= float(np.mean(residuals <= decision.halfwidth)) < 0.9 + 2 / n


def test_feature_selection_ranks_by_mutual_information_with_the_numeric_target(diamonds):
    from sklearn.feature_selection import mutual_info_regression

    spec, _, _, parts, every = diamonds
    rule = FeatureSelection(method="mutual_information", top_k=3)
    chosen = spec.model_copy(update={"training": spec.training.model_copy(update={"feature_selection": rule})})
    m = train.matrices(parts["train"], parts["validation"], chosen)
    discrete = np.isin(np.arange(len(m.feature_names)), m.categorical)
    x = every.x_train  # the features before selection (none missing in this sample)
    assert not np.isnan(x).any()
    expected = mutual_info_regression(x, m.y_train, discrete_features=discrete, random_state=spec.training.seed)
    assert [m.selection[n] for n in m.feature_names] == pytest.approx(expected.tolist())
    assert len(m.selected) == 3 and "carat" in m.selected  # a stone's weight tells most about its price
    assert "depth" not in m.selected and np.isnan(m.x_train[:, m.feature_names.index("depth")]).all()


def test_the_candidate_is_logged_with_its_interval_rmse_and_baselines(diamonds, tuned, tmp_path):
    spec, manifest, manifest_path, parts, m = diamonds
    tuning, booster_text = tuned
    cfg = registry.default_tracking(tmp_path, spec.name, spec.registered_model_name)
    baselines = train.fit_baselines(m, spec)
    logged = train.log_training_task.fn(cfg, spec, manifest, manifest_path, parts["train"], m, baselines, tuning,
                                        booster_text)  # fmt: skip
    assert logged.validation_metric == "rmse" and logged.validation_score == tuning.best_value
    assert set(logged.baselines_validation) == {"mean", "median", "linear", "decision_tree"}
    assert logged.decision["interval"]["coverage"] == 0.9 and logged.decision["interval"]["halfwidth"] > 0
    run = cfg.client().get_run(logged.run_id).data
    assert run.metrics["validation_rmse"] == pytest.approx(tuning.best_value)
    assert run.metrics["validation_rmse_mean"] == pytest.approx(logged.baselines_validation["mean"])
    assert run.params["objective"] == "regression" and run.params["metric"] == "rmse"
    assert float(run.params["interval_halfwidth"]) == logged.decision["interval"]["halfwidth"]
    model = registry.load_model(cfg, logged.model_uri)
    assert model.decision == Interval.model_validate(logged.decision["interval"])
    # the baselines round-trip through their skops files
    for name, fitted in baselines.items():
        loaded = registry.load_baseline(cfg, logged.run_id, name)
        assert np.array_equal(loaded.predict(m.x_val), fitted.predict(m.x_val))
    assert registry.logged_training(cfg, manifest.data_version, spec.training_hash) == logged.model_copy(
        update={"reused_run": True}
    )
