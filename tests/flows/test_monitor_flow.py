"""Drift monitoring on real batches against a real champion."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from flows.monitor import monitor
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
