"""What a monitoring run judges, and its decision: the inputs (per-column drift, null rates), the
model's output (prediction drift) and, on rows whose labels have arrived, the live metric.
The drift statistics themselves come from Evidently (`tasks/stores/evidently.py`)."""

from __future__ import annotations

import math

import polars as pl
from pydantic import BaseModel

from tasks.core.metrics import binary_metrics
from tasks.core.spec import DriftPolicy


class ColumnDrift(BaseModel):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


def drift_margin(drift: ColumnDrift) -> float:
    """How far a column's score is past its threshold toward drift, whatever the method's direction
    (p-values drift low, distances high): > 1 drifted, < 1 not. Comparable across methods."""
    low, high = sorted((abs(drift.score), abs(drift.threshold)))
    if low == 0:
        return math.inf if drift.drifted else 0.0
    return high / low if drift.drifted else low / high


class NullRate(BaseModel):
    column: str
    reference: float
    current: float
    drifted: bool


class PerformanceDrift(BaseModel):
    """The champion's metric on the labelled rows vs on its own test split."""

    metric: str
    rows: int
    live: float | None
    reference: float | None
    drop: float | None
    drifted: bool


def performance_drift(
    y: list[int] | None, proba, threshold: float, reference: float | None, policy: DriftPolicy
) -> PerformanceDrift:
    """The live metric on labelled rows against the test metric; judged from `min_labelled_rows` on."""
    metric = policy.performance_metric
    rows = 0 if y is None else len(y)
    if rows == 0:
        return PerformanceDrift(metric=metric, rows=0, live=None, reference=reference, drop=None, drifted=False)
    live = binary_metrics(y, proba, threshold)[metric]
    if live != live:  # NaN: one class only in the batch
        return PerformanceDrift(metric=metric, rows=rows, live=None, reference=reference, drop=None, drifted=False)
    drop = None if reference is None else float(reference - live)
    drifted = drop is not None and rows >= policy.min_labelled_rows and drop > policy.max_performance_drop
    return PerformanceDrift(metric=metric, rows=rows, live=float(live), reference=reference, drop=drop, drifted=drifted)


def null_rates(
    reference: pl.DataFrame, current: pl.DataFrame, columns: list[str], policy: DriftPolicy
) -> list[NullRate]:
    """Each column's share of nulls, then and now; a rise above the policy's limit is drift."""
    if current.is_empty():
        return []
    then = reference.select(pl.col(columns).null_count() / max(reference.height, 1)).row(0)
    now = current.select(pl.col(columns).null_count() / current.height).row(0)
    return [
        NullRate(column=c, reference=float(a), current=float(b), drifted=b - a > policy.max_null_rate_increase)
        for c, a, b in zip(columns, then, now, strict=True)
    ]


def decide(
    rows: int,
    share: float,
    policy: DriftPolicy,
    performance: PerformanceDrift | None = None,
    prediction: ColumnDrift | None = None,
    nulls: list[NullRate] = (),
) -> tuple[str, list[str]]:
    """(status, reasons): too few rows is never drift; any kind of drift is drift."""
    if rows < policy.min_rows:
        return "insufficient_data", [f"{rows} valid rows < minimum {policy.min_rows}"]
    reasons = []
    if share >= policy.drift_share:
        reasons.append(f"{share:.0%} of columns drifted (policy: {policy.drift_share:.0%})")
    if prediction is not None and prediction.drifted:
        reasons.append(
            f"predicted probabilities moved: {prediction.method} {prediction.score:.3f} vs the champion's test "
            f"predictions (policy: {prediction.threshold:g})"
        )
    for null in (n for n in nulls if n.drifted):
        reasons.append(
            f"{null.column}: {null.current:.1%} nulls, was {null.reference:.1%} "
            f"(policy: +{policy.max_null_rate_increase:.0%})"
        )
    if performance is not None and performance.drifted:
        reasons.append(
            f"{performance.metric} {performance.live:.4f} on {performance.rows} labelled rows, "
            f"{performance.drop:.4f} below the test {performance.reference:.4f} (policy: {policy.max_performance_drop})"
        )
    return ("drift" if reasons else "no_drift"), reasons
