"""Drift monitoring on real batches against a real champion: binary (Telco) and regression (diamonds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.monitor import monitor
from flows.retrain import retrain
from tasks.monitor import DriftPolicy
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS

TELCO = CONFIGS / "telco_churn.yaml"


@pytest.fixture(scope="module")
def batches(telco_lifecycle, tmp_path_factory):
    result, workdir = telco_lifecycle
    folder = tmp_path_factory.mktemp("batches")
    test = read_split(result.prepare.manifest_path, "test").select(pl.all().cast(pl.String))
    same = folder / "same.csv"
    test.write_csv(same)
    shifted = test.with_columns(
        (pl.col("monthly_charges").cast(pl.Float64) * 1.6).round(2).cast(pl.String).alias("monthly_charges"),
        pl.lit("Month-to-month").alias("contract"),
        (pl.col("tenure").cast(pl.Int64) // 6).cast(pl.String).alias("tenure"),
        pl.lit("Fiber optic").alias("internet_service"),
        pl.lit("Electronic check").alias("payment_method"),
        pl.lit("No").alias("online_security"),
        pl.lit("No").alias("tech_support"),
        pl.lit("1.0").alias("paperless_billing"),
    )
    shifted = shifted.with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("oops")).otherwise(pl.col("tenure")).alias("tenure")
    )
    drifted = folder / "drifted.parquet"
    shifted.write_parquet(drifted)
    tiny = folder / "tiny.csv"
    test.head(50).write_csv(tiny)
    return workdir, same, drifted, tiny


def test_a_batch_like_the_training_data_is_not_drift(batches):
    workdir, same, _, _ = batches
    result = monitor(config=TELCO, batch=same, workdir=workdir)
    assert result.status == "no_drift" and result.event_id is None
    assert result.rows > 1000 and Path(result.report_path).is_file()
    assert result.drift_share < 0.3


def test_a_shifted_batch_is_drift_and_emits_an_event(batches):
    workdir, _, drifted, _ = batches
    result = monitor(config=TELCO, batch=drifted, workdir=workdir)
    assert result.status == "drift" and result.event_id
    assert {"monthly_charges", "contract", "internet_service"} <= set(result.drifted_columns)
    assert result.rows_quarantined == 5  # the planted bad values, validated with the same schema
    assert "<html" in Path(result.report_path).read_text()[:2000].lower()


def test_too_few_rows_is_insufficient_data_not_drift(batches):
    workdir, _, _, tiny = batches
    result = monitor(config=TELCO, batch=tiny, workdir=workdir, policy=DriftPolicy(min_rows=200))
    assert result.status == "insufficient_data" and result.report_path is None and result.event_id is None


# -- regression: the served value's drift, the target's drift and an error metric live ---------------
@pytest.fixture(scope="module")
def priced(diamonds_lifecycle, tmp_path_factory):
    """A copy of the regression lifecycle's workdir (a retrain here moves no shared alias), its
    champion's test rows as a batch, and the same stones heavier and dearer."""
    result, trained = diamonds_lifecycle
    workdir = tmp_path_factory.mktemp("diamonds-monitor") / "work"
    shutil.copytree(trained, workdir)
    test = read_split(result.prepare.manifest_path, "test")
    like = workdir.parent / "like.csv"
    test.select(pl.all().cast(pl.String)).write_csv(like)
    dearer = workdir.parent / "dearer.csv"
    test.with_columns((pl.col("carat") * 1.5).round(2), (pl.col("price") * 1.6).round(0)).write_csv(dearer)
    return workdir, like, dearer, test.height


def test_the_regression_champion_s_own_test_rows_are_no_drift(priced, diamonds_config):
    workdir, like, _, rows = priced
    result = monitor(config=diamonds_config, batch=like, workdir=workdir)
    assert result.status == "no_drift" and result.rows == result.rows_labelled == rows, result.reasons
    perf = result.performance
    assert perf.metric == "rmse" and not perf.higher_is_better and perf.limit == 0.3
    assert perf.live == pytest.approx(perf.reference, rel=1e-9)  # the same rows: the test RMSE again
    assert result.prediction.column == "prediction" and result.prediction.score < 0.01
    assert result.target.column == "price" and not result.target.drifted
    assert Path(result.report_path.replace(".html", "-target.html")).is_file()


def test_heavier_dearer_stones_are_drift_of_the_inputs_the_target_and_the_live_rmse(priced, diamonds_config):
    workdir, like, dearer, rows = priced
    result = monitor(config=diamonds_config, batch=dearer, workdir=workdir)
    assert result.status == "drift" and "carat" in result.drifted_columns
    assert result.target.drifted and result.prediction.score > 0.01
    assert result.performance.drifted and result.performance.drop > 0.3
    reasons = " | ".join(result.reasons)
    assert "the target price moved" in reasons and "above the test" in reasons, reasons

    retrained = retrain(config=diamonds_config, batch=dearer, workdir=workdir, n_trials=1, rollout_target="none")
    assert retrained.status in {"promoted", "kept"} and retrained.rows_new == rows, retrained
    assert {"rmse", "mae", "r2"} <= set(retrained.figures["challenger"]) and "linear" in retrained.figures
