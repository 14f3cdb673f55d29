"""Regression: a numeric target. The model answers the predicted value and, when the config asks
for intervals (`evaluation.interval_coverage`), a split-conformal interval around it whose
half-width is fitted on the validation residuals."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.assessment import (
    Assessment,
    absolute_error_groups,
    fairness_figures,
    group_errors,
    slice_table,
    values_of,
)
from tasks.core.baselines import linear_model, shallow_tree
from tasks.core.card import JUDGED, CardLayout, Column, markdown_table
from tasks.core.gate import GateRule, Metrics
from tasks.core.plots import Draw, regression_plots
from tasks.core.task import Decision, Metric, Task


class Interval(Decision):
    halfwidth: float | None = None  # the conformal quantile of |validation residuals| (None: no interval)
    coverage: float | None = None  # the nominal coverage it was fitted for


class IntervalAnswer(BaseModel):
    """A served row's prediction interval, in the target's units."""

    low: float
    high: float


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, dtype=float) - y) ** 2))) if len(y) else float("nan")


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, dtype=float) - y))) if len(y) else float("nan")


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    total = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return 1 - float(np.sum((y - pred) ** 2)) / total if total > 0 else float("nan")


def conformal_halfwidth(residuals: np.ndarray, coverage: float) -> float:
    """Split-conformal: the ⌈(n+1)·coverage⌉-th smallest absolute residual (the largest one when n
    is too small for the coverage asked)."""
    ordered = np.sort(np.abs(np.asarray(residuals, dtype=float)))
    rank = min(math.ceil((len(ordered) + 1) * coverage), len(ordered))
    return float(ordered[rank - 1])


class Regression(Task):
    kind = "regression"
    higher_is_better = frozenset({"r2", "interval_coverage"})
    lower_is_better = frozenset({
        "rmse", "mae", "median_ae", "mape", "latency_ms_per_row", "cv_rmse_mean", "cv_rmse_std", "interval_width",
        "fairness_mae_ratio",
    })  # fmt: skip
    bootstrapped = ("rmse", "mae", "r2")
    slice_metrics = ("rmse", "mae")
    baselines = ("mean", "median", "linear", "decision_tree")
    live_metrics = ("rmse", "mae", "r2")
    score_column = "prediction"
    options = frozenset({"training.objective", "evaluation.interval_coverage"})
    tuning_direction = "minimize"
    validation_metric = "rmse"

    @classmethod
    def default_gate(cls) -> list[GateRule]:
        return [GateRule(metric="rmse", vs="champion"), GateRule(metric="rmse", vs="linear")]

    # -- the data contract ---------------------------------------------------------------------
    def strata(self, target: pl.Expr) -> pl.Expr:
        """The target's deciles (equal values share a bin; a bin may be empty), so every split spans
        its range. `bin_quantiles`: `qcut`'s successor (deprecated in Polars 2)."""
        return target.bin_quantiles(10, labels=False)

    def untrainable(self, counts: pl.DataFrame) -> str | None:
        if counts.height >= 2:
            return None
        target = self.spec.target.column
        found = f" ({counts.item(0, target):g} in all {counts.item(0, 'count')} rows)" if counts.height else ""
        return f"the kept rows have a single value of `{target}`{found}: a model needs targets that differ"

    def encode(self, target: pl.Series) -> np.ndarray:
        return target.cast(pl.Float64).to_numpy()

    # -- training ------------------------------------------------------------------------------
    def lgb_params(self) -> dict:
        objective = {"l2": "regression", "l1": "regression_l1", "huber": "huber"}[self.spec.training.objective or "l2"]
        return {"objective": objective, "metric": "rmse"}

    @property
    def tuning_metric(self) -> str:
        return "rmse"

    def fit_baselines(self, x_train, y_train, x_val, y_val, categorical, seed):
        """The training mean and median for every row, ridge with its alpha chosen by validation
        RMSE, a shallow tree."""
        from sklearn.dummy import DummyRegressor  # lazy: ~1 s, only fitting needs scikit-learn
        from sklearn.linear_model import Ridge
        from sklearn.tree import DecisionTreeRegressor

        def ridge(alpha: float) -> Ridge:
            return Ridge(alpha=alpha, random_state=seed)

        fitted = {
            "mean": DummyRegressor(strategy="mean").fit(x_train, y_train),
            "median": DummyRegressor(strategy="median").fit(x_train, y_train),
            "linear": linear_model(self, ridge, x_train, y_train, x_val, y_val, categorical),
            "decision_tree": shallow_tree(DecisionTreeRegressor, x_train, y_train, seed),
        }
        return {name: fitted[name] for name in self.baselines}

    def baseline_scores(self, model, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x), dtype=float)

    def fit_decision(self, y_val: np.ndarray, raw_val: np.ndarray) -> tuple[Interval, dict[str, float]]:
        coverage = self.spec.evaluation.interval_coverage
        if coverage is None:
            return Interval(), {}
        halfwidth = conformal_halfwidth(np.asarray(y_val, dtype=float) - raw_val, coverage)
        return Interval(halfwidth=halfwidth, coverage=coverage), {"validation_interval_halfwidth": halfwidth}

    def decision_tags(self, decision: Interval) -> dict[str, str]:
        if decision.halfwidth is None:
            return {}
        return {"interval_halfwidth": str(decision.halfwidth), "interval_coverage": str(decision.coverage)}

    def mutual_information(self, x: np.ndarray, y: np.ndarray, discrete: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.feature_selection import mutual_info_regression  # lazy: only feature selection needs it

        return mutual_info_regression(x, y, discrete_features=discrete, random_state=seed)

    # -- answers -------------------------------------------------------------------------------
    def scores(self, raw: np.ndarray, decision: Interval) -> np.ndarray:
        return raw

    def answer_columns(self, scores: np.ndarray, decision: Interval) -> dict[str, pl.Series]:
        if decision.halfwidth is None:
            return {}
        values = pl.Series(scores).fill_nan(None)
        return {"interval_low": (values - decision.halfwidth).alias("interval_low"),
                "interval_high": (values + decision.halfwidth).alias("interval_high")}  # fmt: skip

    def decision_json(self, decision: Interval) -> dict:
        return {"interval": decision.model_dump()}

    def decision_from_json(self, body: dict) -> Interval:
        return Interval.model_validate(body.get("interval") or {})

    def answer_rows(self, scores: np.ndarray, decision: Interval) -> list[dict]:
        halfwidth, values = decision.halfwidth, scores.tolist()
        if halfwidth is None:
            return [{self.score_column: v} for v in values]
        return [{self.score_column: v, "interval_low": v - halfwidth, "interval_high": v + halfwidth} for v in values]

    def answer_fields(self, decision: Interval) -> dict[str, tuple[object, object]]:
        fields: dict[str, tuple[object, object]] = {self.score_column: (float, ...)}
        if decision.halfwidth is not None:
            fields["interval"] = (IntervalAnswer, ...)
        return fields

    def answer_json(self, rows: list[dict], decision: Interval) -> list[dict]:
        if decision.halfwidth is None:
            return rows
        value = self.score_column
        return [{value: r[value], "interval": {"low": r["interval_low"], "high": r["interval_high"]}} for r in rows]

    # -- evaluation ----------------------------------------------------------------------------
    def metrics(self, y: np.ndarray, scores: np.ndarray, decision: Interval) -> Metrics:
        """RMSE, MAE, R², the median absolute error and MAPE (a fraction; left out when a target is
        0), and with an interval the share of targets inside it (`interval_coverage`) and its width."""
        y, pred = np.asarray(y, dtype=float), np.asarray(scores, dtype=float)
        error = np.abs(pred - y)
        out = {"rmse": rmse(y, pred), "mae": mae(y, pred), "r2": r2(y, pred),
               "median_ae": float(np.median(error)) if len(y) else float("nan")}  # fmt: skip
        if len(y) and np.all(y != 0):
            out["mape"] = float(np.mean(error / np.abs(y)))
        if decision.halfwidth is not None:
            out |= {"interval_coverage": float(np.mean(error <= decision.halfwidth)) if len(y) else float("nan"),
                    "interval_width": 2 * decision.halfwidth}  # fmt: skip
        return out

    def metric_function(self, name: str) -> Metric:
        return {"rmse": rmse, "mae": mae, "r2": r2}[name]

    min_slice_rows = 30  # fewer rows: a slice's RMSE moves too much between fits to be judged
    unjudged_slices = f"under {min_slice_rows} rows"
    fairness_worst = {"fairness_mae_ratio": ("mae_ratio", max)}  # gateable: the worst judged group's MAE ratio
    card = CardLayout(
        metrics=("rmse", "mae", "r2", "median_ae", "mape"),
        headline=("rmse", "mae", "r2", "median_ae", "mape", "interval_coverage", "interval_width"),
        cv_title="RMSE",
        plots={"predicted_vs_actual": "Predicted vs actual", "residuals": "Residuals"},
        contribution_units="the target's units",
        slices=(Column("rows", "rows", "d"), Column("rmse", "RMSE"), Column("mae", "MAE"),
                Column("judged", "judged", JUDGED)),
        error_heading="Error analysis (groups by mean absolute error in excess of the overall MAE)",
        errors=(Column("column", "column", ""), Column("group", "group", ""), Column("rows", "rows", "d"),
                Column("mae", "MAE"), Column("mean_error", "mean error (predicted − actual)"),
                Column("excess", "excess", "+.4f")),
        fairness_heading="Fairness across `{column}` (each group's MAE and its ratio to the best judged group's)",
        fairness_description="MAE and mean error per {column} group (test split)",
        fairness=(Column("group", "group", ""), Column("rows", "rows", "d"), Column("mae", "MAE"),
                  Column("mean_error", "mean error"), Column("mae_ratio", "MAE ratio"),
                  Column("judged", "judged", JUDGED)),
    )  # fmt: skip

    def baseline_decision(self, y_val: np.ndarray, scores_val: np.ndarray) -> Interval:
        """None: a baseline is compared on its predicted values."""
        return Interval()

    def cv_folds(self, y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import KFold  # lazy: ~1 s, only cross-validation needs it

        return list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y))))

    def assess(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Interval) -> Assessment:
        """The intervals, and per protected group the MAE and its ratio to the best group's."""
        ev = self.spec.evaluation
        y, pred = np.asarray(y, dtype=float), np.asarray(scores, dtype=float)
        fairness = {column: group_errors(values_of(frame, column), y, pred, ev.min_group_rows)
                    for column in ev.protected}  # fmt: skip
        return Assessment(self.intervals(y, pred) | fairness_figures(fairness, self.fairness_worst), [], fairness)

    def slices(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Interval,
               columns: list[str]) -> list[dict]:  # fmt: skip
        """Per slice: RMSE and MAE; judged with enough rows."""

        def measure(rows: np.ndarray) -> dict:
            return {"rmse": rmse(y[rows], scores[rows]), "mae": mae(y[rows], scores[rows]),
                    "judged": int(rows.sum()) >= self.min_slice_rows}  # fmt: skip

        return slice_table(frame, columns, measure)

    def error_groups(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Interval) -> list[dict]:
        """The groups whose mean absolute error exceeds the overall MAE most."""
        ev = self.spec.evaluation
        categorical, numeric = self.error_features()
        return absolute_error_groups(frame, y, scores, categorical, numeric, ev.error_bins, ev.error_min_rows)

    def plots(self, y: np.ndarray, scores: np.ndarray, decision: Interval) -> dict[str, Draw]:
        return regression_plots(y, scores, decision.halfwidth)

    def predicts(self) -> str:
        return f"`{self.spec.target.column}`"

    def decision_line(self, candidate: Metrics) -> str:
        coverage = self.spec.evaluation.interval_coverage
        if "interval_width" not in candidate or coverage is None:
            return "**Prediction interval:** none (`evaluation.interval_coverage` is not set)"
        return (f"**Prediction interval:** the prediction ± {candidate['interval_width'] / 2:.4g} (split-conformal at "
                f"{coverage:.0%} coverage, from the validation residuals)")  # fmt: skip

    def decision_section(self, candidate: Metrics, assessment: Assessment) -> str:
        """How the prediction interval holds on the test rows: its coverage against the nominal one."""
        coverage = self.spec.evaluation.interval_coverage
        if "interval_coverage" not in candidate or coverage is None:
            return "## Prediction intervals\nNone: `evaluation.interval_coverage` is not set.\n"
        columns = (Column("nominal", "nominal coverage"), Column("interval_coverage", "test coverage"),
                   Column("interval_width", "width"))  # fmt: skip
        row = {"nominal": coverage, "interval_coverage": candidate["interval_coverage"],
               "interval_width": candidate["interval_width"]}  # fmt: skip
        return "## Prediction intervals (test split)\n" + markdown_table(columns, [row])

    # -- monitoring (live metric, prediction and target drift, labels) ---------------------------
    target_drift_counts = True  # the values to predict moved: the model learnt other ones
    # RMSE 30% over the test's: on the bundled regression sample, the RMSE of 600 like rows is over
    # 1.05x the test's 29% of the time, over 1.3x 0.4% (a heavy-tailed target); its drifted traffic
    # (carat x1.3) gives 2.5x
    performance_drop = 0.3

    def live_metric(self, metric: str, y: np.ndarray, answers: pl.DataFrame) -> float:
        return self.metric_function(metric)(y, answers.get_column(self.score_column).to_numpy())

    def agreement(self, new: pl.DataFrame, old: pl.DataFrame) -> float | None:
        """The share of the new predictions inside the old version's interval (None without one)."""
        if not new.height or "interval_low" not in old.columns:
            return None
        value = new.get_column(self.score_column)
        inside = (value >= old.get_column("interval_low")) & (value <= old.get_column("interval_high"))
        return float(inside.mean())
