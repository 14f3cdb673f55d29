"""What the headline metrics hide: calibration, the spread of a metric over resamples, where the
mistakes gather and how groups of people fare. Pure (NumPy and Polars): the evaluate phase feeds
it the test rows, their labels and the probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from tasks.core.calibration import log_loss
from tasks.core.gate import BOOTSTRAPPED
from tasks.core.model import is_positive
from tasks.core.spec import DatasetSpec


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
Metric = Callable[[np.ndarray, np.ndarray], float]  # (labels, probabilities) -> value


def bootstrap_interval(
    y: np.ndarray, proba: np.ndarray, metric: Metric, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of `metric` over `rounds` resamples of the rows (with
    replacement, seeded); resamples where the metric is undefined (NaN: one class only) are left out."""
    return paired_bootstrap_interval(y, [proba], lambda yy, pp: metric(yy, pp[0]), rounds, seed, level)


def paired_bootstrap_interval(
    y: np.ndarray,
    probas: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray, list[np.ndarray]], float],
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """`bootstrap_interval` of a statistic of several models' probabilities on the same resampled
    rows (e.g. the difference of two models' metric: paired, so the rows' own noise cancels)."""
    y = np.asarray(y)
    probas = [np.asarray(p) for p in probas]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        rows = rng.integers(0, len(y), len(y))
        value = statistic(y[rows], [p[rows] for p in probas])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# -- error analysis --------------------------------------------------------------------------
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
    groups: list[tuple[str, str, np.ndarray]] = []
    for column in categorical:
        values = frame.get_column(column).cast(pl.String).fill_null("<null>").to_numpy()
        groups += [(column, value, values == value) for value in sorted(set(values))]
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
    out = []
    for column, group, mask in groups:
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
    return sorted(out, key=lambda r: (-r["excess"], -r["rows"], r["column"], r["group"]))


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


def _ratio(value: float, best: float) -> float:
    if np.isnan(value) or np.isnan(best):
        return float("nan")
    return value / best if best > 0 else 1.0


FAIRNESS_METRICS = {  # gateable figures: the worst judged group over every protected column
    "fairness_selection_rate_ratio": ("selection_rate_ratio", min),
    "fairness_tpr_ratio": ("tpr_ratio", min),
    "fairness_fpr_difference": ("fpr_difference", max),
}


def fairness_figures(tables: dict[str, list[dict]]) -> dict[str, float]:
    """The worst judged group's ratio/difference over the protected columns' `group_fairness` tables."""
    out = {}
    for name, (field, worst) in FAIRNESS_METRICS.items():
        values = [r[field] for rows in tables.values() for r in rows if r["judged"] and not np.isnan(r[field])]
        if values:
            out[name] = float(worst(values))
    return out


# -- all of it, for one model on the test rows -----------------------------------------------
def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, proba)) if 0 < y.sum() < len(y) else float("nan")


def _average_precision(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, proba)) if 0 < y.sum() < len(y) else float("nan")


def _brier(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean((proba - y) ** 2))


_METRIC_FUNCTIONS: dict[str, Metric] = {"roc_auc": _auc, "pr_auc": _average_precision, "log_loss": log_loss,
                                        "brier": _brier}  # fmt: skip
INTERVAL_METRICS = {name: _METRIC_FUNCTIONS[name] for name in BOOTSTRAPPED}  # the gate's `unless_overlap` metrics


def assess(frame: pl.DataFrame, y: np.ndarray, proba: np.ndarray, threshold: float, spec: DatasetSpec) -> dict:
    """One model's figures beyond the headline on the test rows, as the config asks: `metrics`
    (ECE, 95% intervals as `<metric>_ci_low/_ci_high`, the fairness figures), the `reliability`
    table and the `fairness` table of each protected column."""
    ev = spec.evaluation
    y, proba = np.asarray(y).astype(int), np.asarray(proba, dtype=float)
    metrics = {"ece": expected_calibration_error(y, proba, ev.calibration_bins)}
    for name, metric in INTERVAL_METRICS.items():
        low, high = bootstrap_interval(y, proba, metric, ev.bootstrap_rounds, spec.training.seed)
        metrics |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    pred = is_positive(proba, threshold)
    fairness = {
        column: group_fairness(
            frame.get_column(column).cast(pl.String).fill_null("<null>").to_numpy(), y, pred, ev.min_group_rows
        )
        for column in ev.protected
    }
    return {"metrics": metrics | fairness_figures(fairness), "reliability": reliability(y, proba, ev.calibration_bins),
            "fairness": fairness}  # fmt: skip


def spec_error_clusters(
    frame: pl.DataFrame, y: np.ndarray, proba: np.ndarray, threshold: float, spec: DatasetSpec
) -> list[dict]:
    """`error_clusters` over the config's category features and numeric features."""
    numeric = [c for c in spec.base_features if spec.columns[c].type in ("int", "float")]
    ev = spec.evaluation
    return error_clusters(
        frame, y, proba, threshold, spec.categorical_features, numeric, ev.error_bins, ev.error_min_rows
    )
