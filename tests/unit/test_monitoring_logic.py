"""Pure monitoring and retraining logic on small in-memory frames (no Prefect, no MLflow)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.core.cast import clean
from tasks.core.errors import DataError
from tasks.core.monitoring import decide, performance_drift
from tasks.core.prepare import SPLIT_COLUMN
from tasks.core.spec import DriftPolicy, RetrainingSpec
from tasks.monitor import validate_batch
from tasks.retrain import labelled_batch, live_endpoints, merge_for_retraining, stale_reason
from tasks.simulate import DriftRecipe, drifted_batch
from tasks.stores.backends import Backend, ServingState, write_state
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


# -- the decision --------------------------------------------------------------------------------
def test_too_few_rows_is_insufficient_data_whatever_the_scores():
    status, reasons = decide(10, 1.0, DriftPolicy(min_rows=200))
    assert status == "insufficient_data" and "10 valid rows" in reasons[0]


@pytest.mark.parametrize(("share", "status"), [(0.29, "no_drift"), (0.3, "drift"), (0.8, "drift")])
def test_the_share_of_drifted_columns_decides(share, status):
    assert decide(500, share, DriftPolicy(drift_share=0.3))[0] == status


def test_a_performance_drop_beyond_the_policy_is_drift_even_without_data_drift():
    policy = DriftPolicy(max_performance_drop=0.05)
    y = np.array([0, 0, 1, 1] * 50)
    good = performance_drift(y, np.where(y == 1, 0.9, 0.1), 0.5, 0.80, policy)
    assert good.live == pytest.approx(1.0) and not good.drifted
    noisy = np.random.default_rng(0).uniform(size=len(y))
    bad = performance_drift(y, noisy, 0.5, 0.80, policy)
    assert bad.drifted and bad.drop == pytest.approx(0.80 - bad.live)
    status, reasons = decide(500, 0.0, policy, bad)
    assert status == "drift" and "roc_auc" in reasons[0]


def test_no_labels_or_one_class_is_no_performance_verdict():
    policy = DriftPolicy()
    assert performance_drift([], [], 0.5, 0.8, policy).live is None
    one_class = performance_drift(np.zeros(10, dtype=int), np.linspace(0, 1, 10), 0.5, 0.8, policy)
    assert one_class.live is None and not one_class.drifted


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
