"""Metrics against hand-computed values, threshold choice, the fail-closed gate (binary and
regression metrics, each in its direction)."""

import math

import numpy as np
import polars as pl
import pytest
import yaml

from tasks.core.errors import SpecError
from tasks.core.gate import GateDecision, GateRule, apply_gate, promotion
from tasks.core.metrics import binary_metrics, choose_threshold
from tasks.core.spec import load_spec
from tasks.core.task.binary import Binary, Threshold
from tasks.core.task.regression import Interval, Regression
from tasks.evaluate import (
    assessment_sections,
    cross_validate,
    explain_sample,
    global_importance,
    model_card,
    shap_values,
)
from tests.conftest import CONFIGS

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_metrics_match_hand_computed_values():
    m = binary_metrics(Y, P, threshold=0.5)
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) → 3 of 4
    assert m["roc_auc"] == pytest.approx(0.75)
    # ranks: 0.8 (pos) p=1/1, 0.4 (neg), 0.35 (pos) p=2/3 → AP = (1 + 2/3) / 2
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert m["log_loss"] == pytest.approx(expected_ll)
    # at 0.5 only 0.8 is positive: tp=1 fp=0 fn=1 tn=2
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 0, 1, 2)
    assert (m["precision"], m["recall"]) == (1.0, 0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == 0.75


def test_threshold_best_f1_and_fixed():
    # at 0.35: tp=2 fp=1 → precision 2/3, recall 1, F1 0.8 — the best available
    assert choose_threshold(Y, P, "f1") == pytest.approx(0.35)
    assert choose_threshold(Y, P, 0.42) == 0.42
    assert 0.0 <= choose_threshold(Y, P, "youden") <= 1.0


def test_slices_report_each_value(telco_spec):
    frame = pl.DataFrame({"c": ["a", "a", "b", None]})
    rows = Binary(telco_spec).slices(frame, Y, P, Threshold(threshold=0.5), ["c"])
    assert [(r["value"], r["rows"], r["positives"]) for r in rows] == [("<null>", 1, 1), ("a", 2, 0), ("b", 1, 1)]
    assert not any(r["judged"] for r in rows)  # under 30 positives and 30 negatives each


RULES = [
    GateRule(metric="roc_auc", min=0.8),
    GateRule(metric="roc_auc", vs="logistic_regression", max_drop=0.01),
    GateRule(metric="roc_auc", vs="champion", max_drop=0.0),
    GateRule(metric="latency_ms_per_row", max=1.0),
]
BASE = {"logistic_regression": {"roc_auc": 0.84}, "champion": {"roc_auc": 0.845}}


def test_gate_passes_when_every_rule_holds():
    d = apply_gate(RULES, {"roc_auc": 0.85, "latency_ms_per_row": 0.1}, BASE, Binary)
    assert d.passed and len(d.checks) == 4


def test_gate_margin_against_a_baseline_is_declared_not_implicit():
    d = apply_gate(RULES[1:2], {"roc_auc": 0.832}, BASE, Binary)
    assert d.passed  # 0.008 worse, margin 0.01
    d = apply_gate(RULES[1:2], {"roc_auc": 0.829}, BASE, Binary)
    assert not d.passed and "worse by 0.0110" in d.reasons


def test_gate_fails_closed_on_missing_metrics():
    d = apply_gate(RULES, {"roc_auc": 0.9}, BASE, Binary)  # no latency measured
    assert not d.passed and "candidate has no latency_ms_per_row" in d.reasons
    d = apply_gate(RULES, {"roc_auc": float("nan"), "latency_ms_per_row": 0.1}, BASE, Binary)
    assert not d.passed
    d = apply_gate(RULES, {"roc_auc": 0.9, "latency_ms_per_row": 0.1}, {"champion": None}, Binary)
    assert not d.passed and "no logistic_regression metrics" in d.reasons
    d = apply_gate(RULES, {"roc_auc": 0.9, "latency_ms_per_row": 0.1}, BASE | {"champion": {}}, Binary)
    assert not d.passed and "champion has no roc_auc" in d.reasons


def test_gate_without_a_champion_says_so():
    d = apply_gate(RULES, {"roc_auc": 0.9, "latency_ms_per_row": 0.1}, BASE | {"champion": None}, Binary)
    assert d.passed and any(c.detail == "no champion yet" for c in d.checks)


def test_gate_direction_follows_the_metric():
    rule = [GateRule(metric="log_loss", vs="champion", max_drop=0.01)]
    assert apply_gate(rule, {"log_loss": 0.40}, {"champion": {"log_loss": 0.45}}, Binary).passed
    assert not apply_gate(rule, {"log_loss": 0.47}, {"champion": {"log_loss": 0.45}}, Binary).passed


def test_gate_rules_are_validated():
    with pytest.raises(ValueError, match="either min/max or vs"):
        GateRule(metric="roc_auc")
    with pytest.raises(ValueError, match="per_slice"):
        GateRule(metric="rmse", vs="champion", per_slice=True, unless_overlap=True)


def _with_gate(tmp_path, config: str, gate: list[dict]):
    body = yaml.safe_load((CONFIGS / config).read_text())
    body["source"]["path"] = str((CONFIGS / body["source"]["path"]).resolve())
    path = tmp_path / config
    path.write_text(yaml.safe_dump(body | {"gate": gate}))
    return load_spec(path)


@pytest.mark.parametrize(
    ("config", "rule", "named"),
    [
        ("diamonds.yaml", {"metric": "roc_auc", "min": 0.8}, "'roc_auc' is not a metric of a regression target"),
        ("diamonds.yaml", {"metric": "rmse", "vs": "logistic_regression"}, "vs 'logistic_regression'"),
        ("diamonds.yaml", {"metric": "r2", "vs": "champion", "per_slice": True}, "per_slice compares one of"),
        ("diamonds.yaml", {"metric": "median_ae", "vs": "champion", "unless_overlap": True}, "unless_overlap"),
        ("telco_churn.yaml", {"metric": "rmse", "max": 10}, "'rmse' is not a metric of a binary target"),
        ("telco_churn.yaml", {"metric": "auc", "min": 0.8}, "'auc' is not a metric of a binary target"),
    ],
)
def test_a_gate_rule_of_another_kind_is_refused_when_the_config_is_loaded(tmp_path, config, rule, named):
    with pytest.raises((SpecError, ValueError), match=named):
        _with_gate(tmp_path, config, [rule])


def test_the_default_gate_is_the_tasks(tmp_path):
    regression = _with_gate(tmp_path, "diamonds.yaml", None)
    assert [(r.metric, r.vs) for r in regression.gate] == [("rmse", "champion"), ("rmse", "linear")]
    assert _with_gate(tmp_path, "telco_churn.yaml", None).gate == Binary.default_gate()


# -- regression metrics, by hand ----------------------------------------------------------------
YR = np.array([1.0, 2.0, 4.0, 8.0])
PR = np.array([2.0, 2.0, 3.0, 4.0])  # errors +1, 0, -1, -4


def test_regression_metrics_match_hand_computed_values(diamonds_spec):
    m = Regression(diamonds_spec).metrics(YR, PR, Interval())
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 16) / 4))
    assert m["mae"] == pytest.approx(6 / 4)
    # mean 3.75: total sum of squares 7.5625 + 3.0625 + 0.0625 + 18.0625 = 28.75; residual 18
    assert m["r2"] == pytest.approx(1 - 18 / 28.75)
    assert m["median_ae"] == pytest.approx(1.0)  # |errors| 0, 1, 1, 4
    assert m["mape"] == pytest.approx((1 / 1 + 0 / 2 + 1 / 4 + 4 / 8) / 4)
    assert "interval_coverage" not in m and "interval_width" not in m  # no interval: not measured


def test_mape_is_left_out_when_a_target_is_zero_and_the_interval_is_measured(diamonds_spec):
    y = np.array([0.0, 2.0, 4.0, 8.0])
    m = Regression(diamonds_spec).metrics(y, PR, Interval(halfwidth=1.0, coverage=0.9))
    assert "mape" not in m and m["mae"] == pytest.approx((2 + 0 + 1 + 4) / 4)
    assert m["interval_coverage"] == pytest.approx(2 / 4)  # |errors| 2, 0, 1, 4: two within ±1 (the bound counts)
    assert m["interval_width"] == 2.0


# -- the gate with lower-is-better regression metrics --------------------------------------------
def test_rmse_is_better_lower_against_the_champion_with_a_margin():
    rule = [GateRule(metric="rmse", vs="champion", max_drop=25)]
    assert apply_gate(rule, {"rmse": 540}, {"champion": {"rmse": 560}}, Regression).passed  # better
    assert apply_gate(rule, {"rmse": 580}, {"champion": {"rmse": 560}}, Regression).passed  # 20 worse: allowed
    decision = apply_gate(rule, {"rmse": 590}, {"champion": {"rmse": 560}}, Regression)
    assert not decision.passed and "worse by 30.0000" in decision.reasons
    r2 = [GateRule(metric="r2", vs="champion", max_drop=0.01)]  # higher is better for R²
    assert not apply_gate(r2, {"r2": 0.95}, {"champion": {"r2": 0.97}}, Regression).passed


def test_min_gain_over_the_mean_baseline_is_a_lower_rmse():
    rule = [GateRule(metric="rmse", vs="mean", min_gain=1000)]
    assert apply_gate(rule, {"rmse": 600}, {"mean": {"rmse": 4000}}, Regression).passed
    decision = apply_gate(rule, {"rmse": 3500}, {"mean": {"rmse": 4000}}, Regression)
    assert not decision.passed and "gain 500.0000" in decision.reasons


def test_unless_overlap_with_rmse_intervals():
    rule = [GateRule(metric="rmse", vs="champion", unless_overlap=True)]
    champion = {"rmse": 550, "rmse_ci_low": 530, "rmse_ci_high": 570}
    close = {"rmse": 560, "rmse_ci_low": 540, "rmse_ci_high": 580}
    far = {"rmse": 620, "rmse_ci_low": 600, "rmse_ci_high": 640}
    assert apply_gate(rule, close, {"champion": champion}, Regression).passed
    decision = apply_gate(rule, far, {"champion": champion}, Regression)
    assert not decision.passed and "do not overlap" in decision.reasons


def test_per_slice_rmse_judges_slices_with_enough_rows(diamonds_spec):
    task = Regression(diamonds_spec)
    rng = np.random.default_rng(5)
    cut = np.array(["Ideal"] * 200 + ["Fair"] * 40 + ["Good"] * 10)
    frame = pl.DataFrame({"cut": cut})
    y = rng.uniform(300, 5000, cut.size)
    champion = y + rng.normal(0, 100, cut.size)
    candidate = y + rng.normal(0, 100, cut.size)
    candidate[cut == "Good"] += 5000  # far worse, on a slice too small to judge
    rule = GateRule(metric="rmse", vs="champion", per_slice=True, max_drop=50)

    def gate(mine: np.ndarray):
        slices = {"candidate": task.slices(frame, y, mine, Interval(), ["cut"]),
                  "champion": task.slices(frame, y, champion, Interval(), ["cut"])}  # fmt: skip
        return apply_gate([rule], {"rmse": 1.0}, {"champion": {"rmse": 1.0}}, task, slices).checks[0]

    check = gate(candidate)
    assert check.passed and "worst of 2 slices judged" in check.detail
    assert "(1 with under 30 rows not judged)" in check.detail
    candidate[cut == "Fair"] += 300  # a slice of 40 rows now far worse: judged, and it fails
    check = gate(candidate)
    assert not check.passed and "cut=Fair" in check.detail


def test_shap_on_a_seeded_sample_ranks_features_like_all_rows():
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(20_000, 6))
    logit = 2.0 * x[:, 0] - 1.2 * x[:, 1] + 0.6 * x[:, 2] + 0.2 * x[:, 3]
    y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "seed": 0}, lgb.Dataset(x, y), 60)
    names = [f"f{i}" for i in range(6)]

    sample = explain_sample(x, 2000, seed=7)
    assert sample.shape == (2000, 6) and np.array_equal(sample, explain_sample(x, 2000, seed=7))
    assert explain_sample(x[:500], 2000, seed=7).shape == (500, 6)  # fewer rows than the cap: all of them
    ranked = [r["feature"] for r in global_importance(booster, shap_values(booster, sample), names)]
    full = [r["feature"] for r in global_importance(booster, shap_values(booster, x), names)]
    assert ranked[:4] == full[:4] == ["f0", "f1", "f2", "f3"]


def test_a_candidate_is_promoted_only_when_its_gate_passed():
    assert promotion("3", "2", gate_passed=True) == "promote"
    assert promotion("1", None, gate_passed=True) == "promote"
    assert promotion("3", "2", gate_passed=False) == "keep"
    assert promotion("1", None, gate_passed=False) == "keep"
    assert promotion("2", "2", gate_passed=False) == "already_champion"


def test_cross_validation_measures_the_tasks_metric(diamonds_spec, telco_spec):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 3))
    value = 10 * x[:, 0] + rng.normal(size=600)
    params = {"objective": "regression", "verbosity": -1, "seed": 0}
    cv = cross_validate(Regression(diamonds_spec), x, value, params, 30, 3, [], seed=0)
    assert set(cv) == {"cv_rmse_mean", "cv_rmse_std"} and 0.8 < cv["cv_rmse_mean"] < 0.3 * value.std()
    labels = (value > 0).astype(int)
    cv = cross_validate(Binary(telco_spec), x, labels, params | {"objective": "binary"}, 30, 3, [], seed=0)
    assert set(cv) == {"cv_roc_auc_mean", "cv_roc_auc_std"} and cv["cv_roc_auc_mean"] > 0.9


def test_the_regression_model_card_shows_its_metrics_interval_slices_errors_and_fairness(diamonds_spec):
    task = Regression(diamonds_spec)  # slices: cut, clarity; protected: color
    rng = np.random.default_rng(3)
    n = 400
    frame = pl.DataFrame({"cut": rng.choice(["Fair", "Ideal"], n), "clarity": rng.choice(["SI1", "IF"], n),
                          "color": rng.choice(["D", "J"], n), "carat": rng.uniform(0.2, 3, n)})  # fmt: skip
    frame = frame.with_columns(pl.lit(60.0).alias(c) for c in ("depth", "table", "x", "y", "z", "volume"))
    y = 1000 + 3000 * frame["carat"].to_numpy()
    pred = y + rng.normal(0, 200, n)
    interval = Interval(halfwidth=330.0, coverage=0.9)
    candidate = task.metrics(y, pred, interval) | task.assess(frame, y, pred, interval).metrics
    mean = task.metrics(y, np.full(n, y.mean()), task.baseline_decision(y, pred)) | {"rmse": 2500.0}
    del mean["mape"]  # as with a zero target: not measured
    slices = task.slices(frame, y, pred, interval, diamonds_spec.evaluation.slices)
    sections = assessment_sections(task, candidate, task.assess(frame, y, pred, interval),
                                   task.error_groups(frame, y, pred, interval))  # fmt: skip
    importance = [{"feature": "carat", "mean_abs_shap": 1.0, "gain": 1.0}]
    card = model_card(diamonds_spec, "dv", {}, candidate, {"mean": mean, "champion": None}, slices, importance,
                      GateDecision(passed=True, checks=[]), None, sections)  # fmt: skip
    assert "**Task:** predict `price`" in card and "threshold" not in card.lower()
    assert "| model | rmse | mae | r2 | median_ae | mape |" in card
    assert f"| **candidate** | {candidate['rmse']:.4f} | {candidate['mae']:.4f} |" in card
    assert f"| mean | 2500.0000 | {mean['mae']:.4f} | {mean['r2']:.4f} | {mean['median_ae']:.4f} | – |" in card
    assert "**Prediction interval:** the prediction ± 330 (split-conformal at 90% coverage" in card
    assert f"| 0.9000 | {candidate['interval_coverage']:.4f} | 660.0000 |" in card
    assert "| column | value | rows | RMSE | MAE | judged |" in card and "| cut | Fair |" in card
    for m in ("rmse", "mae", "r2"):
        assert f"| {m} | {candidate[m]:.4f} | [{candidate[f'{m}_ci_low']:.4f}, " in card
    assert "## Error analysis (groups by mean absolute error" in card and "| carat | [" in card
    assert "## Fairness across `color`" in card and "| D | " in card and "| J | " in card
    assert "Cross-validation on the training split: RMSE" in card and "Calibration" not in card
