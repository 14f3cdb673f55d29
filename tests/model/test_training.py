"""Model behaviour on the real sample: reproducible tuning, honest baselines, sane directions."""

import numpy as np
import pytest

from tasks import train, tune
from tasks.core.cast import clean
from tasks.core.features import add_features
from tasks.core.model import TabularModel
from tasks.core.prepare import assign_splits
from tasks.core.task.binary import Threshold


@pytest.fixture(scope="module")
def telco_data(telco_spec, telco_raw):
    spec = telco_spec.model_copy(
        update={"training": telco_spec.training.model_copy(update={"n_trials": 8, "num_threads": 2})}
    )
    frame = assign_splits(add_features(clean(telco_raw, spec), spec), spec)
    parts = {s: frame.filter(frame["_split"] == s).drop("_split") for s in ("train", "validation", "test")}
    return spec, parts, train.matrices(parts["train"], parts["validation"], spec)


def test_same_seed_gives_the_same_study_and_model(telco_data):
    spec, _, m = telco_data
    first, second = tune.tune(m, spec), tune.tune(m, spec)
    assert first.best_params == second.best_params
    assert first.best_value == second.best_value
    assert train.fit_final(m, spec, first) == train.fit_final(m, spec, second)
    assert first.n_trials == 8


def test_tuned_model_beats_the_majority_baseline_and_is_close_to_logistic(telco_data):
    from sklearn.metrics import roc_auc_score

    spec, _, m = telco_data
    tuning = tune.tune(m, spec)
    baselines = train.fit_baselines(m, spec)
    booster = train.fit_final(m, spec, tuning)
    import lightgbm as lgb

    auc = roc_auc_score(m.y_val, lgb.Booster(model_str=booster).predict(m.x_val))
    majority = roc_auc_score(m.y_val, baselines["majority_class"].predict_proba(m.x_val)[:, 1])
    logistic = roc_auc_score(m.y_val, baselines["logistic_regression"].predict_proba(m.x_val)[:, 1])
    others = {n: roc_auc_score(m.y_val, b.predict_proba(m.x_val)[:, 1]) for n, b in baselines.items()}
    assert train.baselines_on_validation(m, spec, baselines) == others  # what the run logs: ROC AUC for binary
    assert majority == 0.5 and others["uniform"] == 0.5 and abs(others["stratified"] - 0.5) < 0.06  # chance
    assert logistic > 0.8  # a properly fitted baseline, not a strawman
    assert 0.75 < others["decision_tree"] < auc  # a shallow tree learns something, less than the candidate
    assert auc > 0.82 and auc > logistic - 0.02


def test_model_behaviour_invariance_and_direction(telco_data):
    """Invariance: a non-feature change does nothing. Direction: a two-year contract lowers churn risk."""
    import polars as pl

    spec, parts, m = telco_data
    tuning = tune.tune(m, spec)
    model = TabularModel(spec, train.fit_final(m, spec, tuning), Threshold(threshold=0.5), {})
    rows = parts["test"].filter(pl.col("contract") == "Month-to-month").head(200)
    base = model.predict_scores(rows)
    reordered = model.predict_scores(rows.select(list(reversed(rows.columns))))
    assert np.array_equal(base, reordered)
    longer = model.predict_scores(rows.with_columns(pl.lit("Two year").alias("contract")))
    assert (longer <= base + 1e-9).mean() > 0.9 and longer.mean() < base.mean()


@pytest.mark.parametrize("rule", [{"method": "mutual_information", "top_k": 6}, {"method": "gain", "min_score": 50.0}])
def test_feature_selection_is_decided_on_the_training_split_and_the_model_uses_only_what_it_kept(telco_data, rule):
    import lightgbm as lgb

    from tasks.core.spec import FeatureSelection

    spec, parts, _ = telco_data
    training = spec.training.model_copy(update={"feature_selection": FeatureSelection(**rule)})
    chosen = spec.model_copy(update={"training": training})
    assert chosen.training_hash != spec.training_hash  # a selection is part of what shapes the model
    m = train.matrices(parts["train"], parts["validation"], chosen)
    kept, names = m.selected, m.feature_names
    assert 0 < len(kept) < len(names) and (rule.get("top_k") is None or len(kept) == rule["top_k"])
    if "min_score" in rule:
        assert all(m.selection[n] >= rule["min_score"] for n in kept)
    assert min(m.selection[n] for n in kept) >= max(m.selection[n] for n in names if n not in kept)
    dropped = [names.index(n) for n in names if n not in kept]
    assert np.isnan(m.x_train[:, dropped]).all() and np.isnan(m.x_val[:, dropped]).all()
    # the validation split has no say: other labels there, the same choice
    shuffled = parts["validation"].with_columns(parts["validation"].get_column("churn").shuffle(seed=1))
    assert train.matrices(parts["train"], shuffled, chosen).selected == kept
    booster = lgb.Booster(model_str=train.fit_final(m, chosen, tune.tune(m, chosen)))
    splits = booster.feature_importance(importance_type="split")
    assert all(splits[i] == 0 for i in dropped) and splits.sum() > 0
