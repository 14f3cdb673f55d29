"""What a monitoring run judges, and its decision: the inputs (per-column drift, null rates), the
model's output (prediction drift), and on rows whose labels have arrived the truth itself (target
drift) and the live metric. The drift statistics themselves come from Evidently
(`tasks/stores/evidently.py`); what differs between task kinds, from the task."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.spec import DriftPolicy
from tasks.core.task import Task


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
    drop: float | None  # how much worse live is (`Task.shortfall`: a drop, or an error metric's relative rise)
    higher_is_better: bool = True
    limit: float | None = None  # the policy's `max_performance_drop` it was judged by
    drifted: bool


def live_metric_name(task: Task, policy: DriftPolicy) -> str:
    """The policy's live metric (default: the task's first), one the task has."""
    metric = policy.performance_metric or task.live_metrics[0]
    if metric not in task.live_metrics:
        raise ValueError(f"monitoring.performance_metric {metric!r}: a {task.kind} model has {list(task.live_metrics)}")
    return metric


def performance_limit(task: Task, policy: DriftPolicy) -> float:
    """How much worse the live metric may be (`Task.shortfall`): the policy's, else the task's."""
    return task.performance_drop if policy.max_performance_drop is None else policy.max_performance_drop


def target_drift_counts(task: Task, policy: DriftPolicy) -> bool:
    """Whether a moved target is drift: the policy's `target_drift`, else the task's default."""
    return task.target_drift_counts if policy.target_drift is None else policy.target_drift


def performance_drift(
    task: Task, y: np.ndarray | None, answers: pl.DataFrame, reference: float | None, policy: DriftPolicy
) -> PerformanceDrift:
    """The live metric on labelled rows (encoded targets `y`, their `answers` as served) against the
    test metric; judged from `min_labelled_rows` on, with the metric's direction."""
    metric = live_metric_name(task, policy)
    rows = 0 if y is None else len(y)
    verdict = dict(metric=metric, rows=rows, reference=reference, higher_is_better=task.better(metric))
    live = task.live_metric(metric, y, answers) if rows else math.nan
    if math.isnan(live):  # no rows, one class, one value
        return PerformanceDrift(**verdict, live=None, drop=None, drifted=False)
    drop = None if reference is None else float(task.shortfall(metric, live, reference))
    limit = performance_limit(task, policy)
    drifted = drop is not None and rows >= policy.min_labelled_rows and drop > limit
    return PerformanceDrift(**verdict, live=float(live), drop=drop, limit=limit, drifted=drifted)


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
    target: ColumnDrift | None = None,
) -> tuple[str, list[str]]:
    """(status, reasons): too few rows is never drift; any kind of drift is drift (`target`: only
    when it counts, see `target_drift_counts`)."""
    if rows < policy.min_rows:
        return "insufficient_data", [f"{rows} valid rows < minimum {policy.min_rows}"]
    reasons = []
    if share >= policy.drift_share:
        reasons.append(f"{share:.0%} of columns drifted (policy: {policy.drift_share:.0%})")
    if prediction is not None and prediction.drifted:
        reasons.append(
            f"served {prediction.column} moved: {prediction.method} {prediction.score:.3f} vs the champion's test "
            f"predictions (policy: {prediction.threshold:g})"
        )
    if target is not None and target.drifted:
        reasons.append(
            f"the target {target.column} moved: {target.method} {target.score:.3f} on the labelled rows vs the "
            f"training rows (policy: {target.threshold:g})"
        )
    for null in (n for n in nulls if n.drifted):
        reasons.append(
            f"{null.column}: {null.current:.1%} nulls, was {null.reference:.1%} "
            f"(policy: +{policy.max_null_rate_increase:.0%})"
        )
    if performance is not None and performance.drifted:
        reasons.append(f"{performance_text(performance)} (policy: {performance.limit:g})")
    return ("drift" if reasons else "no_drift"), reasons


def performance_text(performance: PerformanceDrift) -> str:
    """The live metric against the test one, with how much worse in the metric's own terms."""
    p = performance
    head = f"{p.metric} {p.live:.4f} on {p.rows} labelled rows"
    if p.drop is None:
        return head
    if p.higher_is_better:
        gap = f"{p.drop:.4f} below" if p.drop >= 0 else f"{-p.drop:.4f} above"
    else:
        gap = f"{p.drop:.1%} above" if p.drop >= 0 else f"{-p.drop:.1%} below"
    return f"{head}, {gap} the test {p.reference:.4f}"
