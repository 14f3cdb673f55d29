"""The promotion gate: the config's rules (`gate:`) applied to the candidate's metrics and its
comparators' on the same test rows. A new kind of rule is a field of `GateRule` and a branch of
`check_rule`, both here. Which metrics a task kind has, which way each is better and when a slice
is large enough to judge are the task's (`tasks.core.task`): the config checks its rules against
them, and the gate asks the task (`Directions`)."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.compiled import PARITY_ATOL

Metrics = dict[str, float]


class Directions(Protocol):
    """What the gate asks of the task kind (a `tasks.core.task.Task` class or instance)."""

    unjudged_slices: str  # what a slice left out of a per_slice rule lacks ("under 30 rows")

    def better(self, metric: str) -> bool:
        """True when a higher value of `metric` is better."""


class GateRule(BaseModel):
    """One promotion rule: a bound (`min`/`max`) or a comparison with another model on the same
    rows (`vs`, with `max_drop` or `min_gain`; per slice; or tolerant while the intervals overlap).
    Its shape is checked here; its metric and `vs` against the task, when the config is loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    min: float | None = None
    max: float | None = None
    vs: str | None = Field(default=None, description="champion, or one of the task's baselines")
    max_drop: float = Field(default=0.0, ge=0, description="how much worse than `vs` is still a pass")
    min_gain: float | None = Field(default=None, ge=0, description="the candidate must beat `vs` by at least this")
    per_slice: bool = Field(default=False, description="each slice of evaluation.slices vs the same slice of `vs`")
    unless_overlap: bool = Field(
        default=False, description="a candidate worse than `vs` passes while their 95% bootstrap intervals overlap"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GateRule:
        if (self.vs is None) == (self.min is None and self.max is None):
            raise ValueError("a gate rule needs either min/max or vs")
        if self.vs is None and (self.min_gain is not None or self.per_slice or self.unless_overlap):
            raise ValueError("min_gain, per_slice and unless_overlap compare with `vs`")
        if self.min_gain is not None and (self.max_drop or self.unless_overlap):
            raise ValueError("min_gain asks for a gain: it takes no max_drop or unless_overlap")
        if self.per_slice and self.unless_overlap:
            raise ValueError("per_slice compares slices without intervals: it takes no unless_overlap")
        return self


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


Slices = dict[str, list[dict]]  # model ("candidate", a comparator) → its slice table (`Task.slices`)


def apply_gate(
    rules: list[GateRule],
    candidate: Metrics,
    others: dict[str, Metrics | None],
    task: Directions,
    slices: Slices | None = None,
) -> GateDecision:
    """Check every rule; fails closed: a missing candidate metric is a failure.

    `others` maps a comparator name to its metrics on the same test rows; a comparator
    that does not exist (no champion yet) passes its rule with that said. `task` says which way
    each metric is better. `slices` holds the slice tables of the candidate and the comparators
    (for `per_slice` rules): each row says whether it is large enough to be `judged`."""
    checks = [check_rule(rule, candidate, others, task, slices or {}) for rule in rules]
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


def check_rule(
    rule: GateRule, candidate: Metrics, others: dict[str, Metrics | None], task: Directions, slices: Slices
) -> GateCheck:
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
        return _check_slices(rule, name, task, slices.get("candidate"), slices.get(rule.vs))
    reference = other.get(rule.metric)
    if not _present(reference):
        return GateCheck(rule=name, passed=False, detail=f"{rule.vs} has no {rule.metric}")
    drop = _drop(task.better(rule.metric), value, reference)
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


def _drop(higher_is_better: bool, value: float, reference: float) -> float:
    """How much worse the candidate is than the reference (negative: better)."""
    return (reference - value) if higher_is_better else (value - reference)


def _holds(rule: GateRule, drop: float) -> bool:
    """A comparison passes on its drop: within `max_drop`, or at least `min_gain` better."""
    return drop <= rule.max_drop + 1e-12 if rule.min_gain is None else -drop >= rule.min_gain - 1e-12


def _interval(m: Metrics, metric: str) -> tuple[float, float] | None:
    low, high = m.get(f"{metric}_ci_low"), m.get(f"{metric}_ci_high")
    return (low, high) if _present(low) and _present(high) else None


def _check_slices(
    rule: GateRule, name: str, task: Directions, mine: list[dict] | None, theirs: list[dict] | None
) -> GateCheck:
    """Every slice both models were measured on and the candidate's table `judged` (enough rows:
    the task's bar), against the same slice: the worst one decides."""
    if mine is None or theirs is None:
        return GateCheck(rule=name, passed=False, detail=f"no slice metrics of the candidate and {rule.vs}")
    reference = {(s["column"], s["value"]): s.get(rule.metric) for s in theirs}
    measured = [s for s in mine if (s["column"], s["value"]) in reference]
    higher_is_better = task.better(rule.metric)
    drops = [
        (_drop(higher_is_better, s[rule.metric], reference[key]), key, s[rule.metric], reference[key])
        for s in measured
        if s["judged"] and _present(s.get(rule.metric)) and _present(reference[key := (s["column"], s["value"])])
    ]
    if not drops:
        return GateCheck(rule=name, passed=False, detail="no slice large enough on both models")
    drop, (column, value), got, ref = max(drops, key=lambda d: d[0])
    ok = _holds(rule, drop)
    detail = f"worst of {len(drops)} slices judged: {column}={value} candidate {got:.4f} vs {rule.vs} {ref:.4f}"
    if len(drops) < len(measured):
        detail += f" ({len(measured) - len(drops)} with {task.unjudged_slices} not judged)"
    return GateCheck(rule=name, passed=ok, detail=detail)


Promotion = Literal["already_champion", "promote", "keep"]


def promotion(candidate_version: str, champion_version: str | None, gate_passed: bool) -> Promotion:
    """Whether a registered candidate becomes the champion: only when its gate passed (a run
    with no recorded decision counts as failed: the gate fails closed)."""
    if champion_version == candidate_version:
        return "already_champion"
    return "promote" if gate_passed else "keep"
