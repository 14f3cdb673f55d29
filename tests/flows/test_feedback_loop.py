"""The loop on live traffic for a table with an id column, no code of its own: a real `bentoml serve`
answers simulated customers, their labels arrive later by id (through `/feedback` and as a file),
the monitor judges only the champion's served window, and retrain learns from it."""

from __future__ import annotations

import shutil
import time

import polars as pl
import pytest

from flows.labels import labels as labels_flow
from flows.monitor import monitor
from flows.retrain import retrain
from tasks.core.spec import load_spec
from tasks.simulate import post_labels, sample_batch, send_traffic, valid_rows, with_fresh_ids
from tasks.stores.served import read_log
from tasks.stores.workdir import Workdir
from tests.conftest import FIXTURES
from tests.serving.server import bento_server

CONFIG = FIXTURES / "orders.yaml"


@pytest.fixture(scope="module")
def served(orders_lifecycle, tmp_path_factory):
    """A copy of the orders lifecycle's workdir (no log, no labels yet) and its bento serving into it."""
    result, trained = orders_lifecycle
    workdir = tmp_path_factory.mktemp("orders-loop") / "work"
    shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("predictions", "labels"))
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(Workdir(workdir).predictions)}
    with bento_server(result.package.bento_tag, workdir / "serve.log", env) as url:
        yield {"url": url, "workdir": workdir, "result": result}


def wait_for_log(folder, rows: int, timeout: float = 30) -> pl.DataFrame:
    deadline = time.monotonic() + timeout
    while (logged := read_log(folder)).height < rows and time.monotonic() < deadline:
        time.sleep(0.5)
    return logged


def test_labels_by_id_close_the_loop_for_a_second_table(served, tmp_path):
    spec, url, workdir = load_spec(CONFIG), served["url"], served["workdir"]
    champion = served["result"].registry.champion_version
    customers = with_fresh_ids(sample_batch(valid_rows(spec), 300, seed=5), spec, "cust")
    answered = send_traffic(url, customers, spec, batch_size=40)
    assert answered.height == 300 and set(answered["model_version"]) == {champion}
    log = Workdir(workdir).prediction_log(spec.name)
    logged = wait_for_log(log, 300)
    assert sorted(logged["prediction_id"]) == sorted(answered["prediction_id"])
    # rows another version served earlier sit in the same log: the window must leave them out
    other = logged.with_columns(pl.lit("999").alias("model_version"), pl.col("prediction_id") + "-old")
    (log / "date=2026-01-01").mkdir(parents=True)
    other.write_parquet(log / "date=2026-01-01" / "part-other-version.parquet")

    assert post_labels(url, answered.head(200), spec, by="id") == 200  # the service's /feedback
    late = answered.slice(200, 60).select(spec.id_column, pl.col("truth").alias(spec.target.column))
    file = tmp_path / "late-labels.csv"
    extra = pl.DataFrame({spec.id_column: ["cust-3", "nobody"], spec.target.column: ["maybe", "kept"]})
    pl.concat([late, extra]).write_csv(file)
    ingested = labels_flow(config=CONFIG, labels=file, workdir=workdir)
    assert (ingested.rows_in, ingested.stored, ingested.quarantined) == (62, 61, 1)
    quarantined = pl.read_parquet(ingested.quarantine_path)
    assert "not one of" in quarantined.get_column("reason").item()

    checked = monitor(config=CONFIG, workdir=workdir)
    assert checked.batch is None and checked.window.model_version == champion
    assert checked.rows == 300, "only the champion's rows of the window"
    coverage = checked.coverage
    assert (coverage.rows, coverage.labelled, coverage.labels_unmatched) == (300, 260, 1)
    assert coverage.share == pytest.approx(260 / 300) and coverage.median_delay_seconds >= 0
    assert checked.performance.rows == 260 and checked.performance.live is not None
    assert checked.prediction is not None and checked.null_rates

    retrained = retrain(config=CONFIG, workdir=workdir, rollout_target="none")
    assert retrained.status in {"promoted", "kept"}, retrained
    assert retrained.rows_new == 260 and "served window of v" in retrained.source
    assert {"challenger", "logistic_regression"} <= set(retrained.figures) and retrained.gate is not None
    if retrained.status == "promoted":
        assert retrained.bento and retrained.champion_version == retrained.challenger_version
