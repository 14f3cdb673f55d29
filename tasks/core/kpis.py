"""The success criteria a lifecycle system is held to, measured from its own records: how often
training and roll-outs succeed, how fast it answers, how soon drift is caught and how soon a
retrained version serves. Pure: the records come in as plain values (tasks/kpis.py reads them)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

FINISHED = {"COMPLETED": True, "FAILED": False, "CRASHED": False}  # cancelled and running runs do not count


class Target(BaseModel):
    name: str
    what: str
    limit: float
    at_least: bool  # the figure must be >= limit (else <)
    unit: str


TARGETS = [
    Target(name="training_success_rate", what="model training success", limit=0.95, at_least=True, unit="of runs"),
    Target(name="deployment_success_rate", what="deployment success", limit=0.99, at_least=True, unit="of roll-outs"),
    Target(name="inference_p95_ms", what="inference latency, p95", limit=100, at_least=False, unit="ms"),
    Target(name="drift_detection_hours", what="drifted traffic to alarm, worst", limit=24, at_least=False, unit="h"),
    Target(name="retraining_hours", what="retrain trigger to new version serving, worst", limit=4, at_least=False,
           unit="h"),
]  # fmt: skip


class KpiFigure(BaseModel):
    name: str
    what: str
    value: float | None  # None: nothing to measure in the window
    target: str  # e.g. ">= 0.95 of runs"
    met: bool | None  # None: not judged (no value)
    detail: str


def success_rate(states: Sequence[str]) -> tuple[float | None, str]:
    """Completed over finished (completed, failed, crashed) runs."""
    finished = [FINISHED[s] for s in states if s in FINISHED]
    if not finished:
        return None, "no finished runs"
    return sum(finished) / len(finished), f"{sum(finished)} of {len(finished)} finished runs completed"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile`: `buckets` are (upper bound, cumulative count), +Inf last;
    linear within the bucket the rank falls in; the highest finite bound if it falls in +Inf."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def detection_delays(verdicts: Sequence[tuple[datetime, str]], served: Sequence[datetime]) -> list[float]:
    """Hours from drifted traffic to its alarm, one per drift verdict: from the first row served after
    the last verdict that saw no drift (the earliest the drift can have begun unseen) to the verdict."""
    served = sorted(served)
    delays, clear = [], None
    for at, status in sorted(verdicts):
        if status == "drift":
            i = bisect.bisect_right(served, clear) if clear is not None else 0
            if i < len(served) and served[i] <= at:
                delays.append((at - served[i]).total_seconds() / 3600)
        elif status == "no_drift":
            clear = at
    return delays


def retraining_delays(triggers: Sequence[datetime], servings: Sequence[datetime]) -> list[float]:
    """Hours from each retrain trigger to the first new version serving after it (before the next
    trigger); a trigger no serving followed is left out (its retrain kept the champion)."""
    triggers, servings = sorted(triggers), sorted(servings)
    delays = []
    for k, at in enumerate(triggers):
        until = triggers[k + 1] if k + 1 < len(triggers) else None
        i = bisect.bisect_left(servings, at)
        if i < len(servings) and (until is None or servings[i] < until):
            delays.append((servings[i] - at).total_seconds() / 3600)
    return delays


def judge(values: dict[str, tuple[float | None, str]]) -> list[KpiFigure]:
    """Each target's figure and verdict, from `values` (name → (value, how it was measured))."""
    figures = []
    for t in TARGETS:
        value, detail = values.get(t.name, (None, "not measured"))
        met = None if value is None else (value >= t.limit if t.at_least else value < t.limit)
        sign = ">=" if t.at_least else "<"
        figures.append(
            KpiFigure(
                name=t.name, what=t.what, value=value, target=f"{sign} {t.limit:g} {t.unit}", met=met, detail=detail
            )
        )
    return figures
