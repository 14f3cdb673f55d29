"""The Evidently dashboard's panels and the lifecycle's links, from what a run measured."""

from __future__ import annotations

import pytest

from tasks.core.monitoring import ColumnDrift, drift_margin
from tasks.outputs import mlflow_run_link, mlflow_ui, prefect_run_link
from tasks.stores.evidently import TOP_COLUMNS, dashboard_panels


def test_per_column_panels_draw_the_columns_that_moved_most():
    figures = {f"drift_score.c{i}": i / 10 for i in range(8)} | {"drift_share": 0.25, "rows": 900}
    figures |= {f"null_rate.c{i}": 0.01 * i for i in range(7)} | {"label_coverage": 0.4}
    ranked = ["c3", "gone", "c0", "c1", "c2", "c4", "c5"]  # a ranked column without a score is skipped
    panels = dict(dashboard_panels(figures, ranked))
    assert panels["Drift score of the most drifted columns"] == [f"drift_score.c{i}" for i in (3, 0, 1, 2, 4)]
    assert len(ranked) > TOP_COLUMNS
    assert panels["Null rate of the columns with most nulls"] == [f"null_rate.c{i}" for i in (2, 3, 4, 5, 6)]
    assert panels["Share of drifted columns"] == ["drift_share"]


def test_a_run_without_labels_or_drift_scores_draws_no_empty_per_column_panel():
    titles = [title for title, _ in dashboard_panels({"rows": 12, "drift_share": 0.0}, [])]
    assert "Drift score of the most drifted columns" not in titles and "Share of drifted columns" in titles
    assert "Live metric on labelled rows, and on the test split" not in titles


def test_the_drift_margin_ranks_p_values_and_distances_alike():
    def margin(score, threshold, drifted):
        return drift_margin(ColumnDrift(column="c", method="m", score=score, threshold=threshold, drifted=drifted))

    assert margin(0.005, 0.05, True) == pytest.approx(10)  # a p-value 10x under its threshold
    assert margin(0.5, 0.1, True) == pytest.approx(5)  # a distance 5x over
    assert margin(0.5, 0.05, False) == pytest.approx(0.1) and margin(0.02, 0.1, False) == pytest.approx(0.2)
    assert margin(0.0, 0.05, True) == float("inf") and margin(0.0, 0.1, False) == 0.0


def test_links_name_the_run_in_each_ui_and_none_where_the_ui_is_unknown():
    assert mlflow_ui("sqlite:///tmp/mlflow.db", {}) is None
    assert mlflow_ui("http://mlflow:5000/", {}) == "http://mlflow:5000"
    assert mlflow_ui("sqlite:///x.db", {"LIFECYCLE_MLFLOW_UI_URL": "http://127.0.0.1:5001/"}) == "http://127.0.0.1:5001"
    assert mlflow_run_link("http://127.0.0.1:5000", "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert mlflow_run_link(None, "3", "abc") is None
    assert prefect_run_link("http://127.0.0.1:4200/", "r-1") == "http://127.0.0.1:4200/runs/flow-run/r-1"
    assert prefect_run_link(None, "r-1") is None and prefect_run_link("http://x", None) is None
