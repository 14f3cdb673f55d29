"""Metrics against hand-computed values, threshold choice, the fail-closed gate."""

import math

import numpy as np
import pytest

from tasks.core.gate import GateRule, apply_gate, promotion
from tasks.core.metrics import binary_metrics, choose_threshold, slice_metrics
from tasks.evaluate import explain_sample, global_importance, shap_values

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


def test_slices_report_each_value():
    import polars as pl

    frame = pl.DataFrame({"c": ["a", "a", "b", None]})
    rows = slice_metrics(frame, Y, P, 0.5, ["c"])
    assert [(r["value"], r["rows"], r["positives"]) for r in rows] == [("<null>", 1, 1), ("a", 2, 0), ("b", 1, 1)]


RULES = [
    GateRule(metric="roc_auc", min=0.8),
    GateRule(metric="roc_auc", vs="logistic_regression", max_drop=0.01),
    GateRule(metric="roc_auc", vs="champion", max_drop=0.0),
    GateRule(metric="latency_ms_per_row", max=1.0),
]
BASE = {"logistic_regression": {"roc_auc": 0.84}, "champion": {"roc_auc": 0.845}}


def test_gate_passes_when_every_rule_holds():
    d = apply_gate(RULES, {"roc_auc": 0.85, "latency_ms_per_row": 0.1}, BASE)
    assert d.passed and len(d.checks) == 4


def test_gate_margin_against_a_baseline_is_declared_not_implicit():
    d = apply_gate(RULES[1:2], {"roc_auc": 0.832}, BASE)
    assert d.passed  # 0.008 worse, margin 0.01
    d = apply_gate(RULES[1:2], {"roc_auc": 0.829}, BASE)
    assert not d.passed and "worse by 0.0110" in d.reasons


def test_gate_fails_closed_on_missing_metrics():
    d = apply_gate(RULES, {"roc_auc": 0.9}, BASE)  # no latency measured
    assert not d.passed and "candidate has no latency_ms_per_row" in d.reasons
    d = apply_gate(RULES, {"roc_auc": float("nan"), "latency_ms_per_row": 0.1}, BASE)
    assert not d.passed
    d = apply_gate(RULES, {"roc_auc": 0.9, "latency_ms_per_row": 0.1}, {"champion": None})
    assert not d.passed and "no logistic_regression metrics" in d.reasons
    d = apply_gate(RULES, {"roc_auc": 0.9, "latency_ms_per_row": 0.1}, BASE | {"champion": {}})
    assert not d.passed and "champion has no roc_auc" in d.reasons


def test_gate_without_a_champion_says_so():
    d = apply_gate(RULES, {"roc_auc": 0.9, "latency_ms_per_row": 0.1}, BASE | {"champion": None})
    assert d.passed and any(c.detail == "no champion yet" for c in d.checks)


def test_gate_direction_follows_the_metric():
    rule = [GateRule(metric="log_loss", vs="champion", max_drop=0.01)]
    assert apply_gate(rule, {"log_loss": 0.40}, {"champion": {"log_loss": 0.45}}).passed
    assert not apply_gate(rule, {"log_loss": 0.47}, {"champion": {"log_loss": 0.45}}).passed


def test_gate_rules_are_validated():
    with pytest.raises(ValueError, match="unknown gate metric"):
        GateRule(metric="auc", min=0.8)
    with pytest.raises(ValueError, match="either min/max or vs"):
        GateRule(metric="roc_auc")


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
