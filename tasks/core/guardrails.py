"""A roll-out's guardrails, judged per version on what it served: error rate, p95 answer time,
the shift of its scores (the task's score column) against the champion's on the same traffic, and
(labels permitting) the live metric, judged in its own direction. Figures are tallied in bounded
memory whatever the traffic."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.spec import DatasetSpec, Guardrails
from tasks.core.task.kinds import task_of

# answer-time buckets: 0.1 ms to 10 min, 5% wide (p95 is reported as its bucket's upper edge)
_LOW_MS, _RATIO, _BUCKETS = 0.1, 1.05, 330
ERROR_STATUSES = {499, 502, 503, 504}  # timeouts and unreachable back-ends, as nginx records them


def _bucket(ms: float) -> int:
    if ms <= _LOW_MS:
        return 0
    return min(_BUCKETS - 1, 1 + int(math.log(ms / _LOW_MS, _RATIO)))


def _upper_edge(bucket: int) -> float:
    return _LOW_MS * _RATIO**bucket


class Tally:
    """One version's answers in a step: count, errors and a fixed-size histogram of answer times."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.histogram = np.zeros(_BUCKETS, dtype=np.int64)

    def add(self, status: int, ms: float) -> None:
        self.requests += 1
        self.errors += status >= 500 or status in ERROR_STATUSES
        self.histogram[_bucket(ms)] += 1

    def p95_ms(self) -> float | None:
        if not self.requests:
            return None
        cumulative = np.cumsum(self.histogram)
        return float(_upper_edge(int(np.searchsorted(cumulative, math.ceil(0.95 * self.requests)))))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(gap)))


class VersionFigures(BaseModel):
    """What one version served in a step."""

    version: str
    requests: int
    errors: int
    p95_ms: float | None
    rows_scored: int = 0
    live_metric: float | None = None
    labelled: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @classmethod
    def of(cls, version: str, tally: Tally, rows: int = 0, live: float | None = None, labelled: int = 0):
        return cls(version=version, requests=tally.requests, errors=tally.errors, p95_ms=tally.p95_ms(),
                   rows_scored=rows, live_metric=live, labelled=labelled)  # fmt: skip


class StepReport(BaseModel):
    """One step of a roll-out (a canary share, the shadow phase, staging, the watch) and its verdict."""

    name: str
    started_at: float  # epoch seconds
    seconds: float
    share: float | None = None  # canary: the challenger's target share of requests, percent
    served_share: float | None = None  # the share it actually answered
    challenger: VersionFigures
    champion: VersionFigures | None = None
    prediction_shift: float | None = None
    agreement: float | None = None  # shadow: share of the same requests answered alike (`Task.agreement`)
    breaches: list[str] = []

    @property
    def passed(self) -> bool:
        return not self.breaches


def judge(
    challenger: VersionFigures,
    champion: VersionFigures | None,
    shift: float | None,
    rails: Guardrails,
    final: bool,
    min_labels: int,
    shortfall: Callable[[float, float], float],
) -> list[str]:
    """The guardrails the challenger breaks. A figure that cannot be computed yet breaks its rail
    only when `final` (the step's end): fail-closed, never waved through. `shortfall(live,
    champion's)`: how much worse the challenger's live metric is (`Task.shortfall` of the metric)."""
    breaches = []
    if challenger.requests < rails.min_requests and final:
        breaches.append(f"only {challenger.requests} answers from v{challenger.version} (minimum {rails.min_requests})")
    if challenger.requests and challenger.error_rate > rails.max_error_rate and (final or challenger.errors >= 3):
        breaches.append(
            f"error rate {challenger.error_rate:.3f} of v{challenger.version} over {rails.max_error_rate} "
            f"({challenger.errors} of {challenger.requests})"
        )
    if challenger.requests >= rails.min_requests and challenger.p95_ms > rails.max_p95_ms:
        breaches.append(f"p95 {challenger.p95_ms:.0f} ms of v{challenger.version} over {rails.max_p95_ms:.0f} ms")
    if champion is not None:
        if shift is not None and shift > rails.max_prediction_shift:
            breaches.append(f"prediction shift {shift:.3f} vs v{champion.version} over {rails.max_prediction_shift}")
        elif shift is None and final:
            breaches.append(
                f"prediction shift not computable: {challenger.rows_scored} rows from v{challenger.version}, "
                f"{champion.rows_scored} from v{champion.version} (minimum {rails.min_requests} each)"
            )
    if rails.max_live_metric_drop is not None and champion is not None:
        live, old = challenger.live_metric, champion.live_metric
        if live is not None and old is not None:
            worse = shortfall(live, old)
            if worse > rails.max_live_metric_drop:
                breaches.append(
                    f"live metric {live:.4f} vs {old:.4f} of v{champion.version}: "
                    f"worse by {worse:.4g}, over {rails.max_live_metric_drop:g}"
                )
        elif final:
            breaches.append(
                f"live metric not computable: {challenger.labelled} and {champion.labelled} labelled rows "
                f"(minimum {min_labels} each)"
            )
    return breaches


def shift_between(new: np.ndarray, old: np.ndarray, minimum: int) -> float | None:
    """The prediction shift, once both sides scored `minimum` rows."""
    return ks_statistic(new, old) if min(len(new), len(old)) >= minimum else None


def live_metric(rows: pl.DataFrame, spec: DatasetSpec, metric: str) -> tuple[float | None, int]:
    """A version's metric on its served rows whose labels have arrived (the target column set by
    `feedback.join_labels`), from what it answered (`Task.live_metric`), and how many there were."""
    target, task = spec.target.column, task_of(spec)
    labelled = rows.filter(pl.col(target).is_not_null()) if target in rows.columns else rows.clear()
    if labelled.is_empty():
        return None, 0
    value = task.live_metric(metric, task.encode(labelled.get_column(target)), labelled)
    return (None if math.isnan(value) else float(value)), labelled.height
