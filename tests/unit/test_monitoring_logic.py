"""Pure monitoring and retraining logic on small in-memory frames (no Prefect, no MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from tasks.core.cast import clean
from tasks.core.errors import DataError
from tasks.core.monitoring import (
    decide,
    live_metric_name,
    performance_drift,
    performance_limit,
    target_drift_counts,
)
from tasks.core.prepare import SPLIT_COLUMN
from tasks.core.spec import DriftPolicy, RetrainingSpec
from tasks.core.task.kinds import task_of
from tasks.monitor import target_drift, validate_batch
from tasks.retrain import labelled_batch, live_endpoints, merge_for_retraining, stale_reason
from tasks.simulate import DriftRecipe, drifted_batch
from tasks.stores.backends import Backend, ServingState, write_state
from tasks.stores.evidently import check_prediction_drift
from tasks.stores.registry import VersionInfo


def _orders(n: int = 6, **cols) -> pl.DataFrame:
    base = {
        "order_id": [f"o{i}" for i in range(n)],
        "ordered_at": [f"2025-01-{i + 1:02d}T00:00:00" for i in range(n)],
        "amount_eur": [str(10.0 * (i + 1)) for i in range(n)],
        "items": [str(i % 3 + 1) for i in range(n)],
        "channel": [("web", "app", "store")[i % 3] for i in range(n)],
        "express": ["true" if i % 2 else "false" for i in range(n)],
        "coupon": [None] * n,
        "note": [None] * n,
        "outcome": [("kept", "returned")[i % 2] for i in range(n)],
    }
    base.update(cols)
    return pl.DataFrame(base, schema={k: pl.String for k in base})


# -- the batch -----------------------------------------------------------------------------
def test_a_batch_keeps_unlabelled_rows_and_quarantines_wrong_labels(orders_spec):
    raw = _orders(outcome=["kept", "", None, "maybe", "returned", "kept"], items=["1", "x", "2", "1", "1", "1"])
    kept, quarantined = validate_batch(raw, orders_spec)
    assert kept.height + quarantined.height == raw.height
    assert sorted(quarantined.get_column("failed_column").to_list()) == ["items", "outcome"]
    assert "maybe" in quarantined.filter(pl.col("failed_column") == "outcome").get_column("reason").item()
    assert kept.get_column("outcome").to_list() == ["kept", None, "returned", "kept"]
    assert kept.schema["amount_eur"] == pl.Float64


def test_a_batch_without_the_target_column_is_all_unlabelled(orders_spec):
    kept, quarantined = validate_batch(_orders().drop("outcome"), orders_spec)
    assert kept.height == 6 and quarantined.height == 0 and "outcome" not in kept.columns


def test_a_batch_missing_a_feature_column_is_refused(orders_spec):
    with pytest.raises(ValueError, match="channel"):
        validate_batch(_orders().drop("channel"), orders_spec)


def _stones(price: list[str | None]) -> pl.DataFrame:
    """Rows of one real stone (diamonds.csv's first) with these prices, as a batch file gives them."""
    stone = dict(carat="0.23", cut="Ideal", color="E", clarity="SI2", depth="61.5", table="55", x="3.95", y="3.98")
    rows = {name: [value] * len(price) for name, value in (stone | {"z": "2.43"}).items()}
    return pl.DataFrame(rows | {"price": price}, schema={k: pl.String for k in [*rows, "price"]})


def test_a_regression_batch_quarantines_labels_that_are_not_finite_numbers_in_range(diamonds_spec):
    raw = _stones(["326", "", None, "abc", "-5", "inf", " 2e3 "])
    kept, quarantined = validate_batch(raw, diamonds_spec)
    assert kept.height + quarantined.height == raw.height
    assert kept.get_column("price").to_list() == ["326", None, None, "2e3"]  # text, as the label store keeps it
    assert sorted(quarantined.get_column("price").to_list()) == ["-5", "abc", "inf"]
    assert set(quarantined.get_column("failed_column")) == {"price"}
    assert task_of(diamonds_spec).encode(kept.get_column("price").drop_nulls()).tolist() == [326.0, 2000.0]


# -- the decision --------------------------------------------------------------------------------
def test_too_few_rows_is_insufficient_data_whatever_the_scores():
    status, reasons = decide(10, 1.0, DriftPolicy(min_rows=200))
    assert status == "insufficient_data" and "10 valid rows" in reasons[0]


@pytest.mark.parametrize(("share", "status"), [(0.29, "no_drift"), (0.3, "drift"), (0.8, "drift")])
def test_the_share_of_drifted_columns_decides(share, status):
    assert decide(500, share, DriftPolicy(drift_share=0.3))[0] == status


def _answered(proba: np.ndarray, threshold: float = 0.5) -> pl.DataFrame:
    """Binary answers as the orders model gives them: the probability and the label at the threshold."""
    return pl.DataFrame({"probability": proba, "label": np.where(proba >= threshold, "returned", "kept")})


def test_a_performance_drop_beyond_the_policy_is_drift_even_without_data_drift(orders_spec):
    policy, task = DriftPolicy(max_performance_drop=0.05), task_of(orders_spec)
    y = np.array([0, 0, 1, 1] * 50)
    good = performance_drift(task, y, _answered(np.where(y == 1, 0.9, 0.1)), 0.80, policy)
    assert good.live == pytest.approx(1.0) and not good.drifted and good.metric == "roc_auc"
    noisy = np.random.default_rng(0).uniform(size=len(y))
    bad = performance_drift(task, y, _answered(noisy), 0.80, policy)
    assert bad.drifted and bad.drop == pytest.approx(0.80 - bad.live)
    status, reasons = decide(500, 0.0, policy, bad)
    assert status == "drift" and "roc_auc" in reasons[0] and f"{bad.drop:.4f} below the test 0.8000" in reasons[0]


def test_a_threshold_metric_is_the_label_answered(orders_spec):
    y = np.array([1, 1, 0, 0])
    answers = _answered(np.array([0.9, 0.4, 0.6, 0.1]), threshold=0.5)  # one miss each way: accuracy 2/4
    f1 = performance_drift(task_of(orders_spec), y, answers, 0.9, DriftPolicy(performance_metric="accuracy"))
    assert f1.live == pytest.approx(0.5) and f1.drop == pytest.approx(0.4)


def test_no_labels_or_one_class_is_no_performance_verdict(orders_spec):
    policy, task = DriftPolicy(), task_of(orders_spec)
    assert performance_drift(task, np.array([]), _answered(np.array([])), 0.8, policy).live is None
    one_class = performance_drift(task, np.zeros(10, dtype=int), _answered(np.linspace(0, 1, 10)), 0.8, policy)
    assert one_class.live is None and not one_class.drifted


# -- regression: error metrics are worse when higher, judged as a fraction of the test figure -----
Y = np.array([100.0, 200.0, 300.0, 400.0])
PREDICTED = pl.DataFrame({"prediction": [110.0, 190.0, 330.0, 400.0]})  # errors 10, -10, 30, 0


@pytest.mark.parametrize(
    ("metric", "live", "test", "limit", "drop", "drifted"),
    [
        ("rmse", (1100 / 4) ** 0.5, 15.0, 0.05, ((1100 / 4) ** 0.5 - 15) / 15, True),  # 10.6% over the test RMSE
        ("rmse", (1100 / 4) ** 0.5, 15.0, 0.20, ((1100 / 4) ** 0.5 - 15) / 15, False),
        ("mae", 12.5, 12.0, 0.05, 0.5 / 12, False),  # 4.2% over
        ("mae", 12.5, 25.0, 0.0, -0.5, False),  # better than on the test split
        ("r2", 1 - 1100 / 50_000, 0.99, 0.05, 0.99 - (1 - 1100 / 50_000), False),  # r2: an absolute drop
        ("r2", 1 - 1100 / 50_000, 0.99, 0.01, 0.99 - (1 - 1100 / 50_000), True),
    ],
)
def test_the_regression_live_metric_and_its_rule(diamonds_spec, metric, live, test, limit, drop, drifted):
    policy = DriftPolicy(performance_metric=metric, max_performance_drop=limit, min_labelled_rows=4)
    verdict = performance_drift(task_of(diamonds_spec), Y, PREDICTED, test, policy)
    assert verdict.live == pytest.approx(live) and verdict.drop == pytest.approx(drop)
    assert verdict.drifted is drifted and verdict.higher_is_better is (metric == "r2")


def test_an_error_metric_s_reason_says_how_much_above_the_test_figure(diamonds_spec):
    policy = DriftPolicy(performance_metric="rmse", max_performance_drop=0.05, min_labelled_rows=4)
    verdict = performance_drift(task_of(diamonds_spec), Y, PREDICTED, 15.0, policy)
    status, reasons = decide(500, 0.0, policy, verdict)
    assert status == "drift" and reasons == [
        "rmse 16.5831 on 4 labelled rows, 10.6% above the test 15.0000 (policy: 0.05)"
    ]
    few = performance_drift(
        task_of(diamonds_spec), Y, PREDICTED, 15.0, policy.model_copy(update={"min_labelled_rows": 5})
    )
    assert few.live == pytest.approx(16.5831, abs=1e-4) and not few.drifted  # measured, not judged on 4 rows


def test_the_live_metric_and_its_limit_are_the_task_s_own(orders_spec, diamonds_spec):
    assert live_metric_name(task_of(orders_spec), DriftPolicy()) == "roc_auc"  # a policy handed in bare
    assert live_metric_name(task_of(diamonds_spec), DriftPolicy()) == "rmse"
    assert performance_limit(task_of(orders_spec), DriftPolicy()) == 0.05
    assert performance_limit(task_of(diamonds_spec), DriftPolicy()) == 0.3
    assert performance_limit(task_of(diamonds_spec), DriftPolicy(max_performance_drop=0.1)) == 0.1
    with pytest.raises(ValueError, match="'roc_auc'.*rmse"):
        live_metric_name(task_of(diamonds_spec), DriftPolicy(performance_metric="roc_auc"))


def test_prediction_drift_compares_the_served_predicted_values(tmp_path):
    """Real Evidently, on the regression score column: like predictions stay quiet, dearer ones move."""
    rng, policy = np.random.default_rng(7), DriftPolicy()
    reference = pl.Series("prediction", rng.lognormal(7.8, 1.0, 4000))
    args = (policy, tmp_path / "prediction.html", tmp_path / "workspace", "diamonds")
    like = check_prediction_drift(reference, pl.Series("prediction", rng.lognormal(7.8, 1.0, 1000)), *args)
    assert not like.drifted and like.column == "prediction" and like.score < policy.prediction_threshold / 2, like
    moved = check_prediction_drift(reference, pl.Series("prediction", rng.lognormal(8.6, 1.0, 1000)), *args)
    assert moved.drifted and moved.method.lower() == "psi", moved
    status, reasons = decide(1000, 0.0, policy, prediction=moved)
    assert status == "drift" and reasons[0].startswith("served prediction moved: psi")


# -- target drift ---------------------------------------------------------------------------------
def test_target_drift_counts_for_regression_and_is_reported_only_for_binary_unless_the_policy_says(
    orders_spec, diamonds_spec
):
    binary, regression = task_of(orders_spec), task_of(diamonds_spec)
    assert not target_drift_counts(binary, DriftPolicy()) and target_drift_counts(regression, DriftPolicy())
    assert target_drift_counts(binary, DriftPolicy(target_drift=True))
    assert not target_drift_counts(regression, DriftPolicy(target_drift=False))


def _labels(n: int, seed: int, factor: float = 1.0, unlabelled: int = 0) -> pl.DataFrame:
    """Served rows' prices as the label store gives them (text), the first `unlabelled` still missing."""
    prices = (np.random.default_rng(seed).lognormal(7.8, 1.0, n) * factor).round(0).astype(str).tolist()
    return pl.DataFrame({"price": [None] * unlabelled + prices[unlabelled:]}, schema={"price": pl.String})


def test_target_drift_compares_arrived_labels_with_the_training_target(diamonds_spec, tmp_path):
    """Real Evidently: labels like the training prices stay quiet; prices 30% higher are drift."""
    policy = DriftPolicy(min_rows=200)
    reference = pl.DataFrame({"price": np.random.default_rng(0).lognormal(7.8, 1.0, 4000)})
    where = (tmp_path / "target.html", tmp_path / "workspace", datetime(2026, 1, 1, tzinfo=UTC))
    like = target_drift(diamonds_spec, reference, _labels(600, 1), policy, *where)
    assert like is not None and not like.drifted and like.score < like.threshold, like
    moved = target_drift(diamonds_spec, reference, _labels(600, 2, factor=1.3), policy, *where)
    assert moved.drifted and moved.column == "price" and moved.method.startswith("Wasserstein"), moved
    assert moved.score > 2 * like.score
    status, reasons = decide(600, 0.0, policy, target=moved)
    assert status == "drift" and reasons[0].startswith("the target price moved: Wasserstein")
    assert target_drift(diamonds_spec, reference, _labels(600, 3, unlabelled=450), policy, *where) is None  # 150 < 200
    assert (tmp_path / "target.html").stat().st_size > 10_000


# -- retraining ----------------------------------------------------------------------------------
def test_labelled_batch_skips_unlabelled_and_quarantines_bad_rows(orders_spec):
    raw = _orders(outcome=["kept", "", None, "returned", "kept", "returned"], items=["1", "1", "1", "99", "1", "1"])
    rows, unlabelled, quarantined, failures = labelled_batch(raw, orders_spec)
    assert (rows.height, unlabelled, quarantined.height) == (3, 2, 1)
    assert failures.get_column("column").to_list() == ["items"]


def test_labelled_batch_needs_every_input_column(orders_spec):
    with pytest.raises(DataError, match="order_id"):
        labelled_batch(_orders().drop("order_id"), orders_spec)


def _reference(orders_spec) -> dict[str, pl.DataFrame]:
    from tasks.core.features import add_features

    typed = add_features(clean(_orders(9), orders_spec), orders_spec)
    return {"train": typed.head(5), "validation": typed.slice(5, 2), "test": typed.tail(2)}


def test_reference_rows_keep_their_split_and_new_rows_are_split_by_the_config(orders_spec):
    reference = _reference(orders_spec)
    new = clean(_orders(10, order_id=[f"n{i}" for i in range(10)]), orders_spec)
    merged = merge_for_retraining(reference, new, orders_spec, RetrainingSpec())
    assert merged.height == 19
    old = merged.filter(pl.col("order_id").str.starts_with("o"))
    assert old.filter(pl.col(SPLIT_COLUMN) == "test").get_column("order_id").to_list() == ["o7", "o8"]
    assert set(merged.filter(pl.col("order_id").str.starts_with("n")).get_column(SPLIT_COLUMN)) >= {"train", "test"}
    again = merge_for_retraining(reference, new, orders_spec, RetrainingSpec())
    assert again.equals(merged)  # deterministic: the same inputs give the same data version


def test_a_new_row_that_copies_a_reference_row_takes_its_split(orders_spec):
    reference = _reference(orders_spec)
    test_rows = reference["test"].drop([c for c in reference["test"].columns if c not in _orders(1).columns])
    copies = pl.concat([test_rows] * 10)  # served again and again: split alone, most would land in train
    merged = merge_for_retraining(reference, copies, orders_spec, RetrainingSpec())
    again = merged.filter(pl.col("order_id").is_in(["o7", "o8"]))
    assert again.height == 22 and set(again.get_column(SPLIT_COLUMN)) == {"test"}


def test_the_window_drops_the_oldest_reference_rows_first(orders_spec):
    reference = _reference(orders_spec)
    new = clean(_orders(4, order_id=[f"n{i}" for i in range(4)]), orders_spec)
    merged = merge_for_retraining(reference, new, orders_spec, RetrainingSpec(max_rows=7))
    assert merged.height == 7
    assert merged.get_column("order_id").to_list()[:3] == ["o6", "o7", "o8"]  # latest event times kept
    alone = merge_for_retraining(reference, new, orders_spec, RetrainingSpec(include_reference=False))
    assert alone.get_column("order_id").str.starts_with("n").all()


def _version(v: str, data_version: str = "") -> VersionInfo:
    return VersionInfo(version=v, run_id=f"r{v}", aliases=[], tags={"lifecycle.data_version": data_version})


def test_a_retrain_goes_on_only_while_the_drifted_champion_serves():
    base = _version("1", "a")
    assert stale_reason(base, _version("1", "a"), "fresh") is None
    assert stale_reason(base, _version("2", "fresh"), "fresh") is None  # an earlier attempt of this retrain
    reason = stale_reason(base, _version("2", "other"), "fresh")
    assert reason and "v1 to v2" in reason


def test_live_endpoints_are_read_from_the_serving_state(tmp_path):
    backend = Backend(kind="process", ident="123", port=4001, model_version="3", artifact="b:1")
    write_state(tmp_path, "orders", ServingState(port=4000, live=backend))
    write_state(tmp_path, "orders", ServingState(port=4100))
    assert live_endpoints(tmp_path, "orders") == [(4000, "process", "3")]
    assert live_endpoints(tmp_path, "other") == []


# -- simulated batches --------------------------------------------------------------------------
def test_the_default_recipe_comes_from_the_config(telco_spec):
    recipe = DriftRecipe.default(telco_spec)
    assert recipe.favour["contract"] == "Month-to-month"
    assert recipe.favour_low == ["tenure"] and "monthly_charges" in recipe.scale


def test_a_drifted_batch_shifts_the_favoured_columns_and_keeps_labels_real(telco_spec, telco_raw):
    from tasks.core.prepare import split_quarantine
    from tasks.core.schema import find_failures

    kept, _ = split_quarantine(telco_raw, find_failures(telco_raw, telco_spec))
    rows = clean(kept, telco_spec)
    recipe = DriftRecipe(favour={"contract": "Month-to-month"}, favour_low=["tenure"], scale={"monthly_charges": 2.0})
    batch = drifted_batch(rows, telco_spec, 3000, 0, recipe)

    def share(frame):
        return (frame.get_column("contract") == "Month-to-month").mean()

    assert share(batch) > share(rows) + 0.2
    assert batch.get_column("tenure").median() < rows.get_column("tenure").median()
    assert batch.get_column("monthly_charges").max() <= telco_spec.columns["monthly_charges"].max
    assert batch.get_column("monthly_charges").mean() > 1.5 * rows.get_column("monthly_charges").mean()
    assert set(batch.get_column("churn").unique()) <= set(telco_spec.target.labels)
