"""The promotion gate: the config's rules (`gate:`) applied to the candidate's metrics and its
comparators' on the same test rows. A new kind of rule is a field of `GateRule` and a branch of
`check_rule`, both here."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.compiled import PARITY_ATOL

Metrics = dict[str, float]

HIGHER_IS_BETTER = {
    "roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "cv_roc_auc_mean",
    "fairness_selection_rate_ratio", "fairness_tpr_ratio",
}  # fmt: skip
LOWER_IS_BETTER = {"log_loss", "brier", "latency_ms_per_row", "cv_roc_auc_std", "ece", "fairness_fpr_difference"}
BOOTSTRAPPED = ("roc_auc", "pr_auc", "log_loss", "brier")  # each has a 95% interval: <metric>_ci_low/_ci_high
SLICE_METRICS = ("roc_auc", "f1")  # what `slice_metrics` measures per slice
BASELINES = ("majority_class", "stratified", "uniform", "logistic_regression", "decision_tree")


class GateRule(BaseModel):
    """One promotion rule: a bound (`min`/`max`) or a comparison with another model on the same
    rows (`vs`, with `max_drop` or `min_gain`; per slice; or tolerant while the intervals overlap)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    min: float | None = None
    max: float | None = None
    vs: Literal["champion", *BASELINES] | None = None  # type: ignore[valid-type]
    max_drop: float = Field(default=0.0, ge=0, description="how much worse than `vs` is still a pass")
    min_gain: float | None = Field(default=None, ge=0, description="the candidate must beat `vs` by at least this")
    per_slice: bool = Field(default=False, description="each slice of evaluation.slices vs the same slice of `vs`")
    unless_overlap: bool = Field(
        default=False, description="a candidate worse than `vs` passes while their 95% bootstrap intervals overlap"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GateRule:
        if self.metric not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
            raise ValueError(f"unknown gate metric {self.metric!r}")
        if (self.vs is None) == (self.min is None and self.max is None):
            raise ValueError("a gate rule needs either min/max or vs")
        if self.vs is None and (self.min_gain is not None or self.per_slice or self.unless_overlap):
            raise ValueError("min_gain, per_slice and unless_overlap compare with `vs`")
        if self.min_gain is not None and (self.max_drop or self.unless_overlap):
            raise ValueError("min_gain asks for a gain: it takes no max_drop or unless_overlap")
        if self.per_slice and (self.metric not in SLICE_METRICS or self.unless_overlap):
            raise ValueError(f"per_slice compares one of {SLICE_METRICS}, without intervals")
        if self.unless_overlap and self.metric not in BOOTSTRAPPED:
            raise ValueError(f"unless_overlap needs a metric with intervals: {BOOTSTRAPPED}")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER


DEFAULT_GATE = [GateRule(metric="roc_auc", vs="champion"), GateRule(metric="roc_auc", vs="logistic_regression")]


class GateCheck(BaseModel):
    rule: str
    passed: bool
    detail: str


class GateDecision(BaseModel):
    passed: bool
    checks: list[GateCheck]

    @property
    def reasons(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        return "; ".join(f"{c.rule}: {c.detail}" for c in (failed or self.checks))


def _describe(rule: GateRule) -> str:
    if rule.vs:
        scope = "every slice's " if rule.per_slice else ""
        allowed = f"min gain {rule.min_gain:g}" if rule.min_gain is not None else f"max drop {rule.max_drop:g}"
        tolerance = ", unless the 95% intervals overlap" if rule.unless_overlap else ""
        return f"{scope}{rule.metric} vs {rule.vs} ({allowed}{tolerance})"
    bounds = [f">= {rule.min:g}" if rule.min is not None else "", f"<= {rule.max:g}" if rule.max is not None else ""]
    return f"{rule.metric} {' and '.join(b for b in bounds if b)}"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


Slices = dict[str, list[dict]]  # model ("candidate", a comparator) → its `slice_metrics` rows


def apply_gate(
    rules: list[GateRule], candidate: Metrics, others: dict[str, Metrics | None], slices: Slices | None = None
) -> GateDecision:
    """Check every rule; fails closed: a missing candidate metric is a failure.

    `others` maps a comparator name to its metrics on the same test rows; a comparator
    that does not exist (no champion yet) passes its rule with that said. `slices` holds the
    per-slice metrics of the candidate and the comparators (for `per_slice` rules)."""
    checks = [check_rule(rule, candidate, others, slices or {}) for rule in rules]
    return GateDecision(passed=all(c.passed for c in checks), checks=checks)


def with_check(decision: GateDecision, check: GateCheck) -> GateDecision:
    """`decision` with one more check (a built-in one, after the config's rules)."""
    checks = [*decision.checks, check]
    return GateDecision(passed=all(c.passed for c in checks), checks=checks)


COMPILED_RULE = f"compiled model equals the booster (atol {PARITY_ATOL:g})"


def compiled_parity_check(difference: float | None, unavailable: str = "") -> GateCheck:
    """Built in, not a config rule: the compiled model serves only if it scores as the booster does;
    where there is none, the booster serves and the check passes saying so."""
    if difference is None:
        detail = f"no compiled model here ({unavailable or 'not compiled'}): serving uses the booster"
        return GateCheck(rule=COMPILED_RULE, passed=True, detail=detail)
    detail = f"max |compiled − booster| = {difference:.3g} on the test rows"
    return GateCheck(rule=COMPILED_RULE, passed=difference <= PARITY_ATOL, detail=detail)


def check_rule(rule: GateRule, candidate: Metrics, others: dict[str, Metrics | None], slices: Slices) -> GateCheck:
    name = _describe(rule)
    value = candidate.get(rule.metric)
    if not _present(value):
        return GateCheck(rule=name, passed=False, detail=f"candidate has no {rule.metric}")
    if rule.vs is None:
        ok = (rule.min is None or value >= rule.min) and (rule.max is None or value <= rule.max)
        return GateCheck(rule=name, passed=ok, detail=f"candidate {rule.metric}={value:.4f}")
    if rule.vs not in others:
        return GateCheck(rule=name, passed=False, detail=f"no {rule.vs} metrics to compare with")
    other = others[rule.vs]
    if other is None:
        return GateCheck(rule=name, passed=True, detail=f"no {rule.vs} yet")
    if rule.per_slice:
        return _check_slices(rule, name, slices.get("candidate"), slices.get(rule.vs))
    reference = other.get(rule.metric)
    if not _present(reference):
        return GateCheck(rule=name, passed=False, detail=f"{rule.vs} has no {rule.metric}")
    drop = _drop(rule, value, reference)
    detail = f"candidate {value:.4f} vs {rule.vs} {reference:.4f}"
    ok = _holds(rule, drop)
    if rule.min_gain is not None:
        return GateCheck(rule=name, passed=ok, detail=f"{detail} (gain {-drop:.4f})")
    detail += f" (worse by {max(drop, 0):.4f})"
    if rule.unless_overlap and not ok:
        mine, theirs = _interval(candidate, rule.metric), _interval(other, rule.metric)
        if mine is None or theirs is None:
            return GateCheck(rule=name, passed=False, detail=f"{detail}; no intervals to compare")
        ok = mine[0] <= theirs[1] and theirs[0] <= mine[1]
        detail += f"; 95% intervals [{mine[0]:.4f}, {mine[1]:.4f}] and [{theirs[0]:.4f}, {theirs[1]:.4f}]"
        detail += " overlap" if ok else " do not overlap"
    return GateCheck(rule=name, passed=ok, detail=detail)


def _drop(rule: GateRule, value: float, reference: float) -> float:
    """How much worse the candidate is than the reference (negative: better)."""
    return (reference - value) if rule.higher_is_better else (value - reference)


def _holds(rule: GateRule, drop: float) -> bool:
    """A comparison passes on its drop: within `max_drop`, or at least `min_gain` better."""
    return drop <= rule.max_drop + 1e-12 if rule.min_gain is None else -drop >= rule.min_gain - 1e-12


def _interval(m: Metrics, metric: str) -> tuple[float, float] | None:
    low, high = m.get(f"{metric}_ci_low"), m.get(f"{metric}_ci_high")
    return (low, high) if _present(low) and _present(high) else None


MIN_SLICE_CLASS_ROWS = 30  # a slice with fewer positives or negatives than this is too noisy to judge


def _judged(s: dict) -> bool:
    return min(s["positives"], s["rows"] - s["positives"]) >= MIN_SLICE_CLASS_ROWS


def _check_slices(rule: GateRule, name: str, mine: list[dict] | None, theirs: list[dict] | None) -> GateCheck:
    """Every slice both models were measured on, with at least `MIN_SLICE_CLASS_ROWS` positives
    and negatives, against the same slice: the worst one decides."""
    if mine is None or theirs is None:
        return GateCheck(rule=name, passed=False, detail=f"no slice metrics of the candidate and {rule.vs}")
    reference = {(s["column"], s["value"]): s.get(rule.metric) for s in theirs}
    measured = [s for s in mine if (s["column"], s["value"]) in reference]
    drops = [
        (_drop(rule, s[rule.metric], reference[key]), key, s[rule.metric], reference[key])
        for s in measured
        if _judged(s) and _present(s.get(rule.metric)) and _present(reference[key := (s["column"], s["value"])])
    ]
    if not drops:
        return GateCheck(rule=name, passed=False, detail="no slice large enough on both models")
    drop, (column, value), got, ref = max(drops, key=lambda d: d[0])
    ok = _holds(rule, drop)
    detail = f"worst of {len(drops)} slices judged: {column}={value} candidate {got:.4f} vs {rule.vs} {ref:.4f}"
    if len(drops) < len(measured):
        detail += f" ({len(measured) - len(drops)} with under {MIN_SLICE_CLASS_ROWS} positives or negatives not judged)"
    return GateCheck(rule=name, passed=ok, detail=detail)


Promotion = Literal["already_champion", "promote", "keep"]


def promotion(candidate_version: str, champion_version: str | None, gate_passed: bool) -> Promotion:
    """Whether a registered candidate becomes the champion: only when its gate passed (a run
    with no recorded decision counts as failed: the gate fails closed)."""
    if champion_version == candidate_version:
        return "already_champion"
    return "promote" if gate_passed else "keep"
