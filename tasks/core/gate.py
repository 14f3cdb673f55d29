"""The promotion gate: the config's rules (`gate:`) applied to the candidate's metrics and its
comparators' on the same test rows. A new kind of rule is a field of `GateRule` and a branch of
`check_rule`, both here."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.compiled import PARITY_ATOL

Metrics = dict[str, float]

HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "cv_roc_auc_mean"}
LOWER_IS_BETTER = {"log_loss", "brier", "latency_ms_per_row", "cv_roc_auc_std"}


class GateRule(BaseModel):
    """One promotion rule: a bound (`min`/`max`) or a comparison (`vs` with `max_drop`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    min: float | None = None
    max: float | None = None
    vs: Literal["champion", "logistic_regression", "majority_class"] | None = None
    max_drop: float = Field(default=0.0, ge=0, description="how much worse than `vs` is still a pass")

    @model_validator(mode="after")
    def _one_kind(self) -> GateRule:
        if self.metric not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
            raise ValueError(f"unknown gate metric {self.metric!r}")
        if (self.vs is None) == (self.min is None and self.max is None):
            raise ValueError("a gate rule needs either min/max or vs")
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
        return f"{rule.metric} vs {rule.vs} (max drop {rule.max_drop:g})"
    bounds = [f">= {rule.min:g}" if rule.min is not None else "", f"<= {rule.max:g}" if rule.max is not None else ""]
    return f"{rule.metric} {' and '.join(b for b in bounds if b)}"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def apply_gate(rules: list[GateRule], candidate: Metrics, others: dict[str, Metrics | None]) -> GateDecision:
    """Check every rule; fails closed: a missing candidate metric is a failure.

    `others` maps a comparator name to its metrics on the same test rows; a comparator
    that does not exist (no champion yet) passes its rule with that said."""
    checks = [check_rule(rule, candidate, others) for rule in rules]
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


def check_rule(rule: GateRule, candidate: Metrics, others: dict[str, Metrics | None]) -> GateCheck:
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
    reference = other.get(rule.metric)
    if not _present(reference):
        return GateCheck(rule=name, passed=False, detail=f"{rule.vs} has no {rule.metric}")
    drop = (reference - value) if rule.higher_is_better else (value - reference)
    ok = drop <= rule.max_drop + 1e-12
    detail = f"candidate {value:.4f} vs {rule.vs} {reference:.4f} (worse by {max(drop, 0):.4f})"
    return GateCheck(rule=name, passed=ok, detail=detail)


Promotion = Literal["already_champion", "promote", "keep"]


def promotion(candidate_version: str, champion_version: str | None, gate_passed: bool) -> Promotion:
    """Whether a registered candidate becomes the champion: only when its gate passed (a run
    with no recorded decision counts as failed: the gate fails closed)."""
    if champion_version == candidate_version:
        return "already_champion"
    return "promote" if gate_passed else "keep"
