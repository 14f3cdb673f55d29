"""Calibration, bootstrap intervals, error clusters and group fairness against hand-computed
values; for regression, conformal coverage, error groups by MAE and the MAE ratio of groups."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.core.assessment import (
    absolute_error_groups,
    bootstrap_interval,
    error_clusters,
    expected_calibration_error,
    fairness_figures,
    group_errors,
    group_fairness,
    paired_bootstrap_interval,
    reliability,
)
from tasks.core.gate import GateRule, apply_gate
from tasks.core.metrics import binary_metrics
from tasks.core.task.binary import Binary, Threshold
from tasks.core.task.regression import Interval, Regression


def accuracy(y, proba):
    return float(((proba >= 0.5) == (y == 1)).mean())


# -- calibration --------------------------------------------------------------------------------
def test_ece_by_hand():
    y, proba = np.array([0, 1, 1, 0]), np.array([0.1, 0.4, 0.8, 0.9])
    # two bins: [0, .5) holds .1 and .4 (mean .25, observed .5); [.5, 1] holds .8 and .9 (mean .85, observed .5)
    assert expected_calibration_error(y, proba, bins=2) == pytest.approx(0.5 * 0.25 + 0.5 * 0.35)
    table = reliability(y, proba, bins=2)
    assert [(b["bin"], b["rows"]) for b in table] == [("[0.00, 0.50)", 2), ("[0.50, 1.00]", 2)]
    assert table[1]["mean_predicted"] == pytest.approx(0.85) and table[1]["observed_rate"] == 0.5


def test_a_probability_of_one_falls_in_the_last_bin_and_empty_bins_weigh_nothing():
    y, proba = np.array([1, 1, 0]), np.array([1.0, 1.0, 0.0])
    assert expected_calibration_error(y, proba, bins=10) == 0.0
    assert [b["rows"] for b in reliability(y, proba, bins=10)] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]


def test_sharpening_keeps_the_ranking_but_not_the_calibration():
    rng = np.random.default_rng(0)
    proba = rng.uniform(0.05, 0.95, 20_000)
    y = (rng.uniform(size=proba.size) < proba).astype(int)  # calibrated by construction
    logit = np.log(proba / (1 - proba))
    sharp = 1 / (1 + np.exp(-4 * logit))  # same order, overconfident
    assert expected_calibration_error(y, proba) < 0.02 < 0.1 < expected_calibration_error(y, sharp)


# -- uncertainty --------------------------------------------------------------------------------
def test_bootstrap_interval_by_hand():
    y, right = np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.8, 0.2])
    assert bootstrap_interval(y, right, accuracy, rounds=200) == (1.0, 1.0)  # every resample is all right
    # two rows, one right: a resample is right on 0, 1 or 2 of them (1/4, 1/2, 1/4), so the 95% interval is [0, 1]
    assert bootstrap_interval(np.array([1, 1]), np.array([0.9, 0.1]), accuracy, rounds=2000) == (0.0, 1.0)


def test_bootstrap_is_seeded_holds_the_estimate_and_narrows_with_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000)
    proba = np.clip(y * 0.3 + rng.uniform(0, 0.7, y.size), 0, 1)
    small = bootstrap_interval(y[:400], proba[:400], accuracy, rounds=300, seed=7)
    assert small == bootstrap_interval(y[:400], proba[:400], accuracy, rounds=300, seed=7)
    assert small != bootstrap_interval(y[:400], proba[:400], accuracy, rounds=300, seed=8)
    big = bootstrap_interval(y, proba, accuracy, rounds=300, seed=7)
    assert big[0] <= accuracy(y, proba) <= big[1]
    assert (big[1] - big[0]) < 0.6 * (small[1] - small[0])  # ~1/sqrt(10) of the width


def test_a_paired_interval_of_a_model_against_itself_is_zero():
    rng = np.random.default_rng(2)
    y, proba = rng.integers(0, 2, 300), rng.uniform(size=300)
    diff = paired_bootstrap_interval(y, [proba, proba], lambda yy, pp: accuracy(yy, pp[0]) - accuracy(yy, pp[1]))
    assert diff == (0.0, 0.0)


# -- error analysis -----------------------------------------------------------------------------
def test_error_clusters_rank_groups_by_excess_error_rate():
    frame = pl.DataFrame({"plan": ["a"] * 4 + ["b"] * 4, "age": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    proba = np.array([0.9, 0.1, 0.8, 0.2, 0.1, 0.2, 0.9, 0.6])  # plan b: all four wrong (2 FN, 2 FP)
    rows = error_clusters(frame, y, proba, 0.5, ["plan"], ["age"], bins=2, min_rows=1)
    assert [(r["column"], r["group"]) for r in rows] == [
        ("age", "[4.5, 8]"), ("plan", "b"), ("age", "[1, 4.5)"), ("plan", "a")
    ]  # fmt: skip
    worst = rows[1]
    assert (worst["rows"], worst["errors"], worst["false_positives"], worst["false_negatives"]) == (4, 4, 2, 2)
    assert worst["error_rate"] == 1.0 and worst["excess"] == pytest.approx(0.5)  # overall: 4 of 8 wrong
    assert rows[-1]["excess"] == pytest.approx(-0.5)
    assert error_clusters(frame, y, proba, 0.5, ["plan"], [], min_rows=5) == []  # groups below min_rows: left out


# -- fairness -----------------------------------------------------------------------------------
def test_group_fairness_by_hand():
    groups = np.array(["x"] * 10 + ["y"] * 10)
    y = np.array([1] * 5 + [0] * 5 + [1] * 5 + [0] * 5)
    # x: 4 of 5 positives caught, 1 of 5 negatives flagged; y: 2 of 5 caught, 2 of 5 flagged
    pred = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0] + [1, 1, 0, 0, 0, 1, 1, 0, 0, 0])
    x, yy = group_fairness(groups, y, pred, min_rows=10)
    assert (x["selection_rate"], x["tpr"], x["fpr"]) == (0.5, 0.8, 0.2)
    assert (yy["selection_rate"], yy["tpr"], yy["fpr"]) == (0.4, 0.4, 0.4)
    assert yy["selection_rate_ratio"] == pytest.approx(0.8) and yy["tpr_ratio"] == pytest.approx(0.5)
    assert yy["fpr_difference"] == pytest.approx(0.2) and x["tpr_ratio"] == 1.0 and x["fpr_difference"] == 0.0
    figures = fairness_figures({"g": [x, yy]}, Binary.fairness_worst)
    assert figures == pytest.approx(
        {"fairness_selection_rate_ratio": 0.8, "fairness_tpr_ratio": 0.5, "fairness_fpr_difference": 0.2}
    )


def test_a_group_too_small_to_judge_is_reported_but_sets_no_figure():
    groups = np.array(["big"] * 40 + ["tiny"] * 3)
    y = np.array([1, 0] * 20 + [1, 1, 0])
    pred = np.array([1, 0] * 20 + [0, 0, 1])  # the tiny group is all wrong
    rows = group_fairness(groups, y, pred, min_rows=30)
    assert [r["judged"] for r in rows] == [True, False] and rows[1]["tpr_ratio"] == 0.0
    assert fairness_figures({"g": rows}, Binary.fairness_worst)["fairness_tpr_ratio"] == 1.0


# -- the gate's new rules -----------------------------------------------------------------------
def _metrics(y, proba, threshold=0.5):
    return binary_metrics(y, proba, threshold) | {"ece": expected_calibration_error(y, proba)}


def test_a_planted_weak_slice_tops_the_error_analysis_and_blocks_promotion_through_a_slice_rule(telco_spec):
    rng = np.random.default_rng(3)
    plan = np.array(["basic"] * 400 + ["pro"] * 400 + ["weak"] * 80)
    frame = pl.DataFrame({"plan": plan, "tenure": rng.uniform(0, 70, plan.size)})
    y = rng.integers(0, 2, plan.size)
    champion = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.18, y.size), 0, 1)
    candidate = np.clip(0.22 + 0.56 * y + rng.normal(0, 0.18, y.size), 0, 1)  # a touch better...
    weak = plan == "weak"
    candidate[weak] = rng.uniform(size=weak.sum())  # ...except on one slice, where it guesses
    clusters = error_clusters(frame, y, candidate, 0.5, ["plan"], ["tenure"], min_rows=20)
    assert (clusters[0]["column"], clusters[0]["group"]) == ("plan", "weak") and clusters[0]["excess"] > 0.2

    mine, theirs = _metrics(y, candidate), _metrics(y, champion)
    task, at_half = Binary(telco_spec), Threshold(threshold=0.5)
    slices = {
        "candidate": task.slices(frame, y, candidate, at_half, ["plan"]),
        "champion": task.slices(frame, y, champion, at_half, ["plan"]),
    }
    overall = GateRule(metric="roc_auc", vs="champion", max_drop=0.05)
    per_slice = GateRule(metric="roc_auc", vs="champion", max_drop=0.05, per_slice=True)
    decision = apply_gate([overall, per_slice], mine, {"champion": theirs}, task, slices)
    assert [c.passed for c in decision.checks] == [True, False], decision.checks  # the headline hides it
    assert "plan=weak" in decision.checks[1].detail and not decision.passed


def test_a_well_ranked_but_badly_calibrated_model_fails_an_ece_rule():
    rng = np.random.default_rng(4)
    proba = rng.uniform(0.05, 0.95, 5000)
    y = (rng.uniform(size=proba.size) < proba).astype(int)
    sharp = 1 / (1 + np.exp(-4 * np.log(proba / (1 - proba))))
    rules = [GateRule(metric="roc_auc", min=0.7), GateRule(metric="ece", max=0.05)]
    assert apply_gate(rules, _metrics(y, proba), {}, Binary).passed
    decision = apply_gate(rules, _metrics(y, sharp), {}, Binary)
    assert [c.passed for c in decision.checks] == [True, False] and "ece=" in decision.checks[1].detail


def test_min_gain_asks_the_candidate_to_beat_a_baseline_by_a_margin():
    rule = GateRule(metric="roc_auc", vs="decision_tree", min_gain=0.02)
    assert apply_gate([rule], {"roc_auc": 0.83}, {"decision_tree": {"roc_auc": 0.80}}, Binary).passed
    decision = apply_gate([rule], {"roc_auc": 0.81}, {"decision_tree": {"roc_auc": 0.80}}, Binary)
    assert not decision.passed and "gain 0.0100" in decision.checks[0].detail
    with pytest.raises(ValueError, match="min_gain"):
        GateRule(metric="roc_auc", vs="decision_tree", min_gain=0.02, max_drop=0.01)


def test_unless_overlap_tolerates_a_drop_inside_the_noise_only():
    rule = GateRule(metric="roc_auc", vs="champion", unless_overlap=True)
    champion = {"roc_auc": 0.85, "roc_auc_ci_low": 0.83, "roc_auc_ci_high": 0.87}
    close = {"roc_auc": 0.84, "roc_auc_ci_low": 0.82, "roc_auc_ci_high": 0.86}
    far = {"roc_auc": 0.78, "roc_auc_ci_low": 0.76, "roc_auc_ci_high": 0.80}
    assert apply_gate([rule], close, {"champion": champion}, Binary).passed
    decision = apply_gate([rule], far, {"champion": champion}, Binary)
    assert not decision.passed and "do not overlap" in decision.checks[0].detail
    assert not apply_gate([rule], {"roc_auc": 0.84}, {"champion": champion}, Binary).passed  # no interval: fails closed


# -- the data profile at prepare ----------------------------------------------------------------
def test_the_data_profile_by_hand(orders_spec):
    from tasks.core.profile import profile_rows

    spec = orders_spec
    target, positive = spec.target.column, spec.target.positive
    negative = next(label for label in spec.target.labels if label != positive)
    number = next(c for c, col in spec.columns.items() if col.type == "float" and not col.categories)
    category = spec.categorical_features[0]
    values = [str(v) for v in spec.columns[category].categories[:2]]
    frame = pl.DataFrame(
        {
            number: [1.0, 2.0, 3.0, None],
            category: [values[0], values[0], values[1], values[1]],
            target: [negative, negative, positive, positive],
        }
    )
    rows = {r["column"]: r for r in profile_rows(frame, spec)}
    assert set(rows) == {number, category, target}  # the columns the frame has, the target too
    n = rows[number]
    assert (n["missing_share"], n["mean"], n["min"], n["max"]) == (0.25, 2.0, 1.0, 3.0)
    assert n["association"] == pytest.approx(np.corrcoef([1, 2, 3], [0, 0, 1])[0, 1])
    c = rows[category]
    assert c["top"] == f"{values[0]} 50%, {values[1]} 50%" and c["distinct"] == 2
    assert c["association"] == pytest.approx(1.0)  # the category decides the label: Cramér's V of 1
    assert rows[target]["association"] is None and rows[target]["top"] == f"{negative} 50%, {positive} 50%"


# -- the optional calibrator --------------------------------------------------------------------
def _sharp_and_true(n: int, seed: int):
    rng = np.random.default_rng(seed)
    proba = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < proba).astype(int)
    return y, proba, 1 / (1 + np.exp(-4 * np.log(proba / (1 - proba))))


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_a_calibrator_fixes_overconfident_probabilities_and_is_kept(method):
    from tasks.core.calibration import calibrate

    y, _, sharp = _sharp_and_true(4000, 5)
    calibrator, figures = calibrate(method, y, sharp)
    assert calibrator is not None and figures["calibrator_kept"] == 1.0
    assert figures["validation_log_loss_calibrated"] < figures["validation_log_loss_uncalibrated"]
    y_new, _, sharp_new = _sharp_and_true(4000, 6)  # rows it never saw
    fixed = calibrator.apply(sharp_new)
    assert expected_calibration_error(y_new, fixed) < 0.03 < expected_calibration_error(y_new, sharp_new)
    assert np.all(np.diff(fixed[np.argsort(sharp_new)]) >= -1e-12) and fixed.min() > 0 and fixed.max() < 1


def test_a_calibrator_that_does_not_help_out_of_fold_is_not_kept():
    from tasks.core.calibration import calibrate

    y, honest, _ = _sharp_and_true(300, 7)  # already calibrated: isotonic only overfits these few rows
    calibrator, figures = calibrate("isotonic", y, honest)
    assert calibrator is None and figures["calibrator_kept"] == 0.0


def test_a_model_saves_and_applies_its_calibrator(tmp_path, telco_spec):
    import lightgbm as lgb

    from tasks.core.calibration import Calibrator
    from tasks.core.model import TabularModel

    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, len(telco_spec.feature_names)))
    data = lgb.Dataset(x, (x[:, 0] + rng.normal(size=300) > 0).astype(int))
    booster = lgb.train({"objective": "binary", "verbose": -1}, data, num_boost_round=5).model_to_string()
    calibrator = Calibrator(method="sigmoid", a=0.5, b=-0.2)
    decision = Threshold(threshold=0.4, calibrator=calibrator)
    loaded = TabularModel.load(TabularModel(telco_spec, booster, decision, {}).save(tmp_path / "m"))
    assert loaded.decision.calibrator == calibrator and loaded.decision.threshold == 0.4
    raw = loaded.booster.predict(x)
    expected = 1 / (1 + np.exp(-(0.5 * np.log(raw / (1 - raw)) - 0.2)))
    np.testing.assert_allclose(loaded.predict_matrix(x), expected, rtol=1e-12)  # what it serves is calibrated
    plain = TabularModel(telco_spec, booster, Threshold(threshold=0.4), {}).save(tmp_path / "plain")
    assert TabularModel.load(plain).decision.calibrator is None


# -- regression ---------------------------------------------------------------------------------
def test_conformal_intervals_cover_the_nominal_share_of_new_rows(diamonds_spec):
    task = Regression(diamonds_spec)  # interval_coverage: 0.9
    rng = np.random.default_rng(9)

    def rows(n: int):
        x = rng.uniform(0, 10, n)
        return 3 * x + rng.standard_t(4, n) * (1 + x / 5), 3 * x  # heavy-tailed noise; the prediction: 3x

    y_val, pred_val = rows(2000)
    interval, _ = task.fit_decision(y_val, pred_val)
    y_test, pred_test = rows(20_000)
    m = task.metrics(y_test, pred_test, interval)
    assert interval.coverage == 0.9 and abs(m["interval_coverage"] - 0.9) < 0.015
    assert m["interval_width"] == pytest.approx(2 * interval.halfwidth)
    narrow = Interval(halfwidth=interval.halfwidth / 2, coverage=0.9)  # a too-narrow interval is seen to be
    assert task.metrics(y_test, pred_test, narrow)["interval_coverage"] < 0.75


def test_error_groups_rank_groups_by_excess_mean_absolute_error():
    frame = pl.DataFrame({"cut": ["a"] * 4 + ["b"] * 4, "carat": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
    y = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0])
    pred = y + np.array([1, -1, 1, -1, 9, 7, 8, 8])  # cut b: MAE 8, all over-predicted; overall MAE 4.5
    rows = absolute_error_groups(frame, y, pred, ["cut"], ["carat"], bins=2, min_rows=1)
    assert [(r["column"], r["group"]) for r in rows] == [
        ("carat", "[4.5, 8]"), ("cut", "b"), ("carat", "[1, 4.5)"), ("cut", "a")
    ]  # fmt: skip
    worst = rows[1]
    assert (worst["rows"], worst["mae"], worst["mean_error"]) == (4, 8.0, 8.0)
    assert worst["excess"] == pytest.approx(3.5) and rows[-1]["excess"] == pytest.approx(-3.5)
    assert rows[2]["mean_error"] == 0.0  # cut a: errors cancel, MAE 1
    assert absolute_error_groups(frame, y, pred, ["cut"], [], min_rows=5) == []


def test_group_mae_and_the_worst_groups_ratio_by_hand():
    groups = np.array(["D"] * 40 + ["J"] * 40 + ["X"] * 5)
    y = np.full(85, 100.0)
    pred = y + np.concatenate([np.full(40, 2.0), np.full(40, -5.0), np.full(5, 50.0)])
    d, j, x = group_errors(groups, y, pred, min_rows=30)
    assert (d["mae"], d["mean_error"], d["mae_ratio"]) == (2.0, 2.0, 1.0)
    assert (j["mae"], j["mean_error"], j["mae_ratio"]) == (5.0, -5.0, 2.5)
    assert not x["judged"] and x["mae_ratio"] == 25.0  # reported, but too small to set the figure
    assert fairness_figures({"color": [d, j, x]}, Regression.fairness_worst) == {"fairness_mae_ratio": 2.5}
    assert Regression.better("fairness_mae_ratio") is False  # a gate rule asks for `max`


def test_the_regression_assessment_has_intervals_and_fairness(diamonds_spec):
    task = Regression(diamonds_spec)  # protected: [color]
    rng = np.random.default_rng(10)
    color = rng.choice(["D", "E", "J"], 600)
    y = rng.uniform(500, 5000, 600)
    pred = y + rng.normal(0, 100, 600) * np.where(color == "J", 3, 1)  # J's errors three times as large
    assessed = task.assess(pl.DataFrame({"color": color}), y, pred, Interval())
    m = assessed.metrics
    for name in ("rmse", "mae", "r2"):
        assert m[f"{name}_ci_low"] < task.metric_function(name)(y, pred) < m[f"{name}_ci_high"]
    assert 2.4 < m["fairness_mae_ratio"] < 3.6 and assessed.reliability == []
    assert [g["group"] for g in assessed.fairness["color"]] == ["D", "E", "J"]
    assert assessed == task.assess(pl.DataFrame({"color": color}), y, pred, Interval())  # seeded
