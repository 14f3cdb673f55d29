"""The task: what a model learns to answer (binary, multiclass, regression) as one concept.

What differs between task kinds is a small, closed set: the target's contract in the data, the
LightGBM objective and tuning metric, the baselines, the decision fitted on validation (a
threshold, an interval), the answer's columns, the metrics and which way each is better, the
default gate and what monitoring compares. `Task` names that set; each kind implements it in one
module of this package (`binary`, `regression`). Phases, the service and the monitor ask
`tasks.core.task.kinds.task_of(spec)`; they never test a kind's name. A new kind is one new module plus its tests.

The modules here import the dataset spec only for type checking: `tasks.core.spec` asks them
which metrics a kind has when it validates a config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from tasks.core.assessment import Assessment, Metric, bootstrap_intervals
from tasks.core.card import CardLayout
from tasks.core.plots import Draw

if TYPE_CHECKING:
    from tasks.core.gate import GateRule, Metrics
    from tasks.core.spec import DatasetSpec


class Decision(BaseModel):
    """What a kind fits on the validation split after the booster, carried by the model and
    applied to every answer (binary: the threshold and an optional calibrator; regression: the
    half-width of a conformal interval)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Task(ABC):
    """One task kind for one dataset spec. Instances are cheap: build one with `task_of(spec)`."""

    kind: ClassVar[str]
    # -- facts of the kind (class level: the spec validates configs with them) -------------------
    higher_is_better: ClassVar[frozenset[str]]  # gateable metrics, better when higher
    lower_is_better: ClassVar[frozenset[str]]  # gateable metrics, better when lower
    bootstrapped: ClassVar[tuple[str, ...]]  # metrics with 95% intervals (`<m>_ci_low/_ci_high`)
    slice_metrics: ClassVar[tuple[str, ...]]  # what `slices` measures per slice (per_slice gate rules)
    baselines: ClassVar[tuple[str, ...]]  # comparator names a gate rule may name in `vs`
    live_metrics: ClassVar[tuple[str, ...]]  # `monitoring.performance_metric` choices; the first is the default
    score_column: ClassVar[str]  # the one number an answer carries per row: what drift and shift compare
    options: ClassVar[frozenset[str]]  # the config options only some kinds read, that this one does

    def __init__(self, spec: DatasetSpec):
        self.spec = spec

    @classmethod
    def metrics_known(cls) -> frozenset[str]:
        return cls.higher_is_better | cls.lower_is_better

    @classmethod
    @abstractmethod
    def default_gate(cls) -> list[GateRule]:
        """The gate when a config has no `gate:` section."""

    # -- the data contract (the target's values: `spec.target.as_column()`) --------------------
    @abstractmethod
    def strata(self, target: pl.Expr) -> pl.Expr:
        """What a `stratified` split groups rows by before shuffling within each group."""

    @abstractmethod
    def untrainable(self, counts: pl.DataFrame) -> str | None:
        """Why no model can learn from the kept rows' targets (one class, one value), or None.
        `counts`: each distinct kept target (the target's column) with its rows (`count`)."""

    @abstractmethod
    def encode(self, target: pl.Series) -> np.ndarray:
        """The kept targets as LightGBM's label vector; as numbers, also what the data profile
        correlates each column with."""

    # -- training ------------------------------------------------------------------------------
    @abstractmethod
    def lgb_params(self) -> dict:
        """LightGBM's objective and evaluation metric (and `num_class` where it applies)."""

    tuning_direction: ClassVar[str]  # Optuna's direction for `tuning_metric`
    validation_metric: ClassVar[str]  # `tuning_metric` by our name: baselines on validation, each CV fold (`cv_<m>_*`)

    @property
    @abstractmethod
    def tuning_metric(self) -> str:
        """The LightGBM metric name early stopping, pruning and the study follow on validation."""

    @abstractmethod
    def fit_baselines(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                      categorical: list[int], seed: int) -> dict[str, object]:  # fmt: skip
        """The fitted comparators, named as in `baselines` (scikit-learn estimators)."""

    @abstractmethod
    def baseline_scores(self, model, x: np.ndarray) -> np.ndarray:
        """A baseline's scores (what `score_column` holds for the candidate)."""

    @abstractmethod
    def fit_decision(self, y_val: np.ndarray, raw_val: np.ndarray) -> tuple[Decision, dict[str, float]]:
        """The decision fitted on the booster's validation outputs, and the figures it was chosen by."""

    @abstractmethod
    def decision_tags(self, decision: Decision) -> dict[str, str]:
        """The decision as flat strings: the training run's MLflow params and the logged model's metadata."""

    @abstractmethod
    def mutual_information(self, x: np.ndarray, y: np.ndarray, discrete: np.ndarray, seed: int) -> np.ndarray:
        """Each column's mutual information with the encoded target (`training.feature_selection`);
        `x` has no missing values, `discrete` marks its categorical columns."""

    # -- answers -------------------------------------------------------------------------------
    @abstractmethod
    def scores(self, raw: np.ndarray, decision: Decision) -> np.ndarray:
        """The booster's outputs as the answer's `score_column` (a calibrated probability, a value)."""

    @abstractmethod
    def answer_columns(self, scores: np.ndarray, decision: Decision) -> dict[str, pl.Series]:
        """The answer's columns after the score (binary: the label; regression: the interval), null
        where the score is NaN (a row not scored)."""

    @abstractmethod
    def decision_json(self, decision: Decision) -> dict:
        """The decision's keys in the model's JSON."""

    @abstractmethod
    def decision_from_json(self, body: dict) -> Decision:
        """The decision back from the model's JSON."""

    def answer_schema(self, decision: Decision) -> dict[str, pl.DataType]:
        """The answer's columns and types: `score_column`, then `answer_columns`'. What the prediction
        log stores, a bulk answer and the MLflow signature carry."""
        after = self.answer_columns(np.empty(0), decision)
        return {self.score_column: pl.Float64} | {name: column.dtype for name, column in after.items()}

    @abstractmethod
    def answer_rows(self, scores: np.ndarray, decision: Decision) -> list[dict]:
        """Each scored row's `answer_schema` columns as plain values (the log's rows for a few records:
        no Polars, microseconds a record)."""

    @abstractmethod
    def answer_fields(self, decision: Decision) -> dict[str, tuple[object, object]]:
        """One row's answer in JSON after its prediction id, as pydantic fields (type, default)."""

    @abstractmethod
    def answer_json(self, rows: list[dict], decision: Decision) -> list[dict]:
        """`answer_rows` as the JSON answer has them: the fields of `answer_fields`."""

    def answer_counts(self, scores: np.ndarray, decision: Decision) -> dict[str, int]:
        """How many rows got each answer, for the served-predictions counter's `label`: a kind
        without labels counts every row under its score column's name."""
        return {self.score_column: len(scores)}

    # -- evaluation ----------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, y: np.ndarray, scores: np.ndarray, decision: Decision) -> Metrics:
        """The headline metrics on rows with encoded targets `y`."""

    @abstractmethod
    def metric_function(self, name: str) -> Metric:
        """One metric as a function of (targets, scores): for intervals, cross-validation, live rows."""

    unjudged_slices: ClassVar[str]  # what a slice too small for per_slice gate rules lacks ("under 30 rows")
    card: ClassVar[CardLayout]  # what the model card and the evaluation's artifacts show

    @classmethod
    def better(cls, metric: str) -> bool:
        """True when a higher value of `metric` is better (an unknown metric is an error)."""
        if metric in cls.higher_is_better:
            return True
        if metric in cls.lower_is_better:
            return False
        raise ValueError(f"{metric!r} is not a {cls.kind} metric: {sorted(cls.metrics_known())}")

    @abstractmethod
    def baseline_decision(self, y_val: np.ndarray, scores_val: np.ndarray) -> Decision:
        """A baseline's decision, fitted on its validation scores as far as a baseline has one."""

    @abstractmethod
    def cv_folds(self, y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Seeded (fit rows, held-out rows) pairs for cross-validating on the training split."""

    def intervals(self, y: np.ndarray, scores: np.ndarray) -> Metrics:
        """The seeded bootstrap 95% intervals of the `bootstrapped` metrics (`<metric>_ci_low/_ci_high`)."""
        functions = {name: self.metric_function(name) for name in self.bootstrapped}
        return bootstrap_intervals(functions, y, scores, self.spec.evaluation.bootstrap_rounds, self.spec.training.seed)

    @abstractmethod
    def assess(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Decision) -> Assessment:
        """The figures beyond the headline on the test rows (`frame`): 95% intervals of the
        `bootstrapped` metrics, fairness over `evaluation.protected`, and the kind's own."""

    @abstractmethod
    def slices(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Decision,
               columns: list[str]) -> list[dict]:  # fmt: skip
        """Per value of each category column: its rows, the `slice_metrics` and whether the slice is
        large enough for per_slice gate rules (`judged`)."""

    @abstractmethod
    def error_groups(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Decision) -> list[dict]:
        """Where the mistakes gather: groups of rows by category value and numeric quantile bin,
        worst `excess` over the overall error first."""

    def error_features(self) -> tuple[list[str], list[str]]:
        """The category features and numeric features the error analysis groups rows by."""
        spec = self.spec
        return spec.categorical_features, [c for c in spec.base_features if spec.columns[c].type in ("int", "float")]

    @abstractmethod
    def plots(self, y: np.ndarray, scores: np.ndarray, decision: Decision) -> dict[str, Draw]:
        """The kind's plots of the test rows, by file stem."""

    @abstractmethod
    def predicts(self) -> str:
        """What the model predicts, as the model card says it."""

    @abstractmethod
    def decision_line(self, candidate: Metrics) -> str:
        """The model card's line on the decision the model carries."""

    @abstractmethod
    def decision_section(self, candidate: Metrics, assessment: Assessment) -> str:
        """The model card's section on how well the decision holds on the test rows."""

    # -- monitoring (live metric, prediction and target drift, labels) ---------------------------
    target_drift_counts: ClassVar[bool]  # a moved target is drift when `monitoring.target_drift` is unset
    performance_drop: ClassVar[float]  # `monitoring.max_performance_drop` when unset (see `shortfall`)

    @abstractmethod
    def live_metric(self, metric: str, y: np.ndarray, answers: pl.DataFrame) -> float:
        """`metric` (one of `live_metrics`) on labelled rows (encoded targets `y`) from what they were
        answered (the score column and the answer columns, as served); NaN when it is undefined."""

    @abstractmethod
    def agreement(self, new: pl.DataFrame, old: pl.DataFrame) -> float | None:
        """Shadow: the share of the same rows two versions answered alike (row-aligned answer frames),
        or None when there is nothing to compare."""

    def shortfall(self, metric: str, live: float, reference: float) -> float:
        """How much worse `live` is than `reference` (negative: better), the figure the limits
        `monitoring.max_performance_drop` and `guardrails.max_live_metric_drop` read: the drop of a
        metric better when higher (roc_auc 0.85 → 0.80: 0.05); the rise of an error metric as a
        fraction of the reference (rmse 500 → 550: 0.10)."""
        if self.better(metric):
            return reference - live
        if reference > 0:
            return (live - reference) / reference
        return float("inf") if live > reference else 0.0
