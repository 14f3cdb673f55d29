"""What the headline metrics hide: calibration, the spread of a metric over resamples, where the
mistakes gather and how groups of people fare. Pure (NumPy and Polars), and shared by the task
kinds: each kind's `assess`, `slices` and `error_groups` (tasks/core/task/) put these pieces together
for the test rows, their targets and the model's scores."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tasks.core.gate import Metrics
from tasks.core.metrics import is_positive

Metric = Callable[[np.ndarray, np.ndarray], float]  # (encoded targets, scores) -> value


@dataclass(frozen=True)
class Assessment:
    """One model's figures beyond the headline on the test rows."""

    metrics: Metrics  # gateable: 95% intervals (`<metric>_ci_low/_ci_high`), fairness figures, ECE
    reliability: list[dict] = field(default_factory=list)  # the calibration table (probabilities only)
    fairness: dict[str, list[dict]] = field(default_factory=dict)  # per protected column, its groups


def values_of(frame: pl.DataFrame, column: str) -> np.ndarray:
    """A column's values as text, a missing one as "<null>": how slices, groups and errors name them."""
    return frame.get_column(column).cast(pl.String).fill_null("<null>").to_numpy()


def category_masks(frame: pl.DataFrame, column: str) -> Iterator[tuple[str, np.ndarray]]:
    """Each value of a column (sorted) with the rows that hold it."""
    values = values_of(frame, column)
    for value in sorted(set(values)):
        yield value, values == value


def slice_table(frame: pl.DataFrame, columns: list[str], measure: Callable[[np.ndarray], dict]) -> list[dict]:
    """Per value of each column: the column, the value, its rows and what `measure` says of those rows."""
    return [{"column": column, "value": value, "rows": int(mask.sum())} | measure(mask)
            for column in columns for value, mask in category_masks(frame, column)]  # fmt: skip


# -- calibration -----------------------------------------------------------------------------
def reliability(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict]:
    """The reliability diagram's data: per equal-width probability bin ([k/bins, (k+1)/bins), the
    last one closed), its rows, mean predicted probability and observed positive rate."""
    y, proba = np.asarray(y, dtype=float), np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    which = np.minimum((proba * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        mask = which == k
        n = int(mask.sum())
        out.append(
            {
                "bin": f"[{k / bins:.2f}, {(k + 1) / bins:.2f}{']' if k == bins - 1 else ')'}",
                "rows": n,
                "mean_predicted": float(proba[mask].mean()) if n else None,
                "observed_rate": float(y[mask].mean()) if n else None,
            }
        )
    return out


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """ECE: the row-weighted mean gap between predicted probability and observed rate over `reliability`'s bins."""
    table = reliability(y, proba, bins)
    total = sum(b["rows"] for b in table)
    return float(sum(b["rows"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in table if b["rows"]) / total)


# -- uncertainty -----------------------------------------------------------------------------
def bootstrap_interval(
    y: np.ndarray, scores: np.ndarray, metric: Metric, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of `metric` over `rounds` resamples of the rows (with
    replacement, seeded); resamples where the metric is undefined (NaN: one class only) are left out."""
    return paired_bootstrap_interval(y, [scores], lambda yy, pp: metric(yy, pp[0]), rounds, seed, level)


def paired_bootstrap_interval(
    y: np.ndarray,
    scores: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray, list[np.ndarray]], float],
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """`bootstrap_interval` of a statistic of several models' scores on the same resampled rows
    (e.g. the difference of two models' metric: paired, so the rows' own noise cancels)."""
    y = np.asarray(y)
    scores = [np.asarray(p) for p in scores]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        rows = rng.integers(0, len(y), len(y))
        value = statistic(y[rows], [p[rows] for p in scores])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(metrics: dict[str, Metric], y: np.ndarray, scores: np.ndarray, rounds: int,
                        seed: int) -> Metrics:  # fmt: skip
    """Each metric's `bootstrap_interval` as `<metric>_ci_low` and `<metric>_ci_high` (the same seed for each)."""
    out = {}
    for name, metric in metrics.items():
        low, high = bootstrap_interval(y, scores, metric, rounds, seed)
        out |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    return out


# -- error analysis --------------------------------------------------------------------------
def feature_groups(frame: pl.DataFrame, categorical: list[str], numeric: list[str],
                   bins: int = 4) -> list[tuple[str, str, np.ndarray]]:  # fmt: skip
    """(column, group, rows) for each category value and each numeric quantile bin (and missing values)."""
    groups: list[tuple[str, str, np.ndarray]] = []
    for column in categorical:
        groups += [(column, value, mask) for value, mask in category_masks(frame, column)]
    for column in numeric:
        values = frame.get_column(column).cast(pl.Float64).to_numpy()
        present = ~np.isnan(values)
        if not present.any():
            continue
        edges = np.unique(np.quantile(values[present], np.linspace(0, 1, bins + 1)))
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            last = k == len(edges) - 2
            inside = present & (values >= lo) & ((values <= hi) if last else (values < hi))
            groups.append((column, f"[{lo:.4g}, {hi:.4g}{']' if last else ')'}", inside))
        if (~present).any():
            groups.append((column, "<null>", ~present))
    return groups


def _worst_first(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-r["excess"], -r["rows"], r["column"], r["group"]))


def error_clusters(
    frame: pl.DataFrame,
    y: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    categorical: list[str],
    numeric: list[str],
    bins: int = 4,
    min_rows: int = 20,
) -> list[dict]:
    """The test rows' mistakes at the threshold, grouped by each category value and each numeric
    quantile bin: errors, false positives, false negatives and the error rate's excess over the
    overall rate; groups of at least `min_rows`, worst excess first."""
    y = np.asarray(y).astype(int)
    pred = is_positive(proba, threshold).astype(int)
    wrong = pred != y
    overall = float(wrong.mean()) if len(y) else 0.0
    out = []
    for column, group, mask in feature_groups(frame, categorical, numeric, bins):
        rows = int(mask.sum())
        if rows < min_rows:
            continue
        errors = int(wrong[mask].sum())
        out.append(
            {
                "column": column,
                "group": group,
                "rows": rows,
                "errors": errors,
                "false_positives": int((wrong & (pred == 1))[mask].sum()),
                "false_negatives": int((wrong & (pred == 0))[mask].sum()),
                "error_rate": errors / rows,
                "excess": errors / rows - overall,
            }
        )
    return _worst_first(out)


def absolute_error_groups(
    frame: pl.DataFrame,
    y: np.ndarray,
    pred: np.ndarray,
    categorical: list[str],
    numeric: list[str],
    bins: int = 4,
    min_rows: int = 20,
) -> list[dict]:
    """Where the predicted values miss most: per category value and numeric quantile bin, the mean
    absolute error, the mean error (prediction − target: above 0 over-predicts) and the MAE's
    excess over the overall MAE; groups of at least `min_rows`, worst excess first."""
    error = np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
    overall = float(np.abs(error).mean()) if len(error) else 0.0
    out = []
    for column, group, mask in feature_groups(frame, categorical, numeric, bins):
        rows = int(mask.sum())
        if rows < min_rows:
            continue
        mae = float(np.abs(error[mask]).mean())
        out.append({"column": column, "group": group, "rows": rows, "mae": mae,
                    "mean_error": float(error[mask].mean()), "excess": mae - overall})  # fmt: skip
    return _worst_first(out)


# -- fairness --------------------------------------------------------------------------------
def group_fairness(groups: np.ndarray, y: np.ndarray, pred: np.ndarray, min_rows: int = 30) -> list[dict]:
    """Per group of one protected column: rows, selection rate, TPR and FPR, and their ratios (or,
    for FPR, difference) to the best group among those with at least `min_rows` rows (`judged`)."""
    groups, y, pred = np.asarray(groups), np.asarray(y).astype(int), np.asarray(pred).astype(int)
    rows = []
    for value in sorted(set(groups.tolist()), key=str):
        mask = groups == value
        positives, negatives = mask & (y == 1), mask & (y == 0)
        rows.append(
            {
                "group": str(value),
                "rows": int(mask.sum()),
                "selection_rate": float(pred[mask].mean()),
                "tpr": float(pred[positives].mean()) if positives.any() else float("nan"),
                "fpr": float(pred[negatives].mean()) if negatives.any() else float("nan"),
                "judged": int(mask.sum()) >= min_rows,
            }
        )
    judged = [r for r in rows if r["judged"]]
    best_selection = max((r["selection_rate"] for r in judged), default=float("nan"))
    best_tpr = max((r["tpr"] for r in judged if not np.isnan(r["tpr"])), default=float("nan"))
    best_fpr = min((r["fpr"] for r in judged if not np.isnan(r["fpr"])), default=float("nan"))
    for r in rows:
        r["selection_rate_ratio"] = _ratio(r["selection_rate"], best_selection)
        r["tpr_ratio"] = _ratio(r["tpr"], best_tpr)
        r["fpr_difference"] = r["fpr"] - best_fpr
    return rows


def group_errors(groups: np.ndarray, y: np.ndarray, pred: np.ndarray, min_rows: int = 30) -> list[dict]:
    """Per group of one protected column: rows, MAE, mean error (prediction − target) and the MAE's
    ratio to the best (lowest) among groups with at least `min_rows` rows (`judged`)."""
    groups, error = np.asarray(groups), np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
    rows = []
    for value in sorted(set(groups.tolist()), key=str):
        mask = groups == value
        rows.append({"group": str(value), "rows": int(mask.sum()), "mae": float(np.abs(error[mask]).mean()),
                     "mean_error": float(error[mask].mean()), "judged": int(mask.sum()) >= min_rows})  # fmt: skip
    best = min((r["mae"] for r in rows if r["judged"]), default=float("nan"))
    for r in rows:
        r["mae_ratio"] = _error_ratio(r["mae"], best)
    return rows


def _error_ratio(value: float, best: float) -> float:
    if np.isnan(best):
        return float("nan")
    if best > 0:
        return value / best
    return 1.0 if value == 0 else float("inf")  # the best group makes no error at all


def _ratio(value: float, best: float) -> float:
    if np.isnan(value) or np.isnan(best):
        return float("nan")
    return value / best if best > 0 else 1.0


Figures = dict[str, tuple[str, Callable[[list[float]], float]]]  # figure → (a group's field, the worst of them)


def fairness_figures(tables: dict[str, list[dict]], figures: Figures) -> dict[str, float]:
    """The worst judged group's ratio/difference over the protected columns' group tables."""
    out = {}
    for name, (column, worst) in figures.items():
        values = [r[column] for rows in tables.values() for r in rows if r["judged"] and not np.isnan(r[column])]
        if values:
            out[name] = float(worst(values))
    return out
