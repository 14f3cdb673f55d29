"""The dataset contract: a YAML config loaded into a typed `DatasetSpec`.

A user brings a new table by writing one of these files; nothing else in the
project names a column. The Pandera schema is derived from the spec.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from tasks.core.errors import SpecError
from tasks.core.gate import GateRule
from tasks.core.ops import OPS
from tasks.core.task.kinds import KINDS

ColumnType = Literal["int", "float", "bool", "category", "string", "datetime"]
FEATURE_TYPES = {"int", "float", "bool", "category"}
WINDOW_PATTERN = r"^[1-9][0-9]*(rows|s|m|h|d|w)$"  # a monitoring window: 7d, 24h, 30m, 5000rows


def text_form(value: object) -> object:
    """The one rule for text values on every input path (files, requests, batches, labels): surrounding
    whitespace is trimmed, and a number stands for its text (`1` → "1", `2.5` → "2.5"), so integer
    codes can be sent as the table has them. true/false are not text: rejected. Anything else is
    returned as it is, for the caller's type check to reject."""
    if isinstance(value, bool):
        raise ValueError("true/false is not a text value or a code (quote it if the table has it as text)")
    if isinstance(value, int | float):
        return str(value)
    return value.strip() if isinstance(value, str) else value


Label = Annotated[str, BeforeValidator(text_form)]  # a target label: text, or a number standing for its text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the table comes from: a CSV/Parquet file or a database query."""

    path: str | None = None
    format: Literal["csv", "parquet"] | None = None
    uri: str | None = Field(default=None, description="SQLAlchemy database URI")
    query: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SourceSpec:
        if (self.path is None) == (self.uri is None):
            raise ValueError("source needs exactly one of `path` or `uri`")
        if self.uri is not None and not self.query:
            raise ValueError("a database source needs a `query`")
        return self

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(self.path or "").suffix.lower()
        if suffix in {".parquet", ".pq"}:
            return "parquet"
        if suffix in {".csv", ".txt", ".gz"}:
            return "csv"
        raise SpecError(f"cannot tell the format of {self.path!r}: set source.format")


class BinaryTarget(_Strict):
    """A target with two labels, one of them the positive class (the default task)."""

    column: str
    task: Literal["binary"] = Field(default="binary", exclude=True)  # the default: left out of hashes and files
    positive: Label = Field(description="label of the positive class")
    labels: Annotated[list[Label], Field(min_length=2, max_length=2, description="numbers stand for their text")]

    @model_validator(mode="after")
    def _positive_is_a_label(self) -> BinaryTarget:
        if self.positive not in self.labels:
            raise ValueError(f"positive label {self.positive!r} is not one of {self.labels}")
        return self

    def as_column(self) -> ColumnSpec:
        """The target's contract, checked like any other column's: one of the labels, never missing."""
        return ColumnSpec(type="category", categories=list(self.labels), feature=False)


class RegressionTarget(_Strict):
    """A numeric target: finite numbers, optionally within [min, max]."""

    column: str
    task: Literal["regression"]
    min: float | None = Field(default=None, description="smaller targets are quarantined")
    max: float | None = Field(default=None, description="larger targets are quarantined")

    @model_validator(mode="after")
    def _ordered(self) -> RegressionTarget:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"target min {self.min} > max {self.max}")
        return self

    def as_column(self) -> ColumnSpec:
        """The target's contract, checked like any other column's: a number within the bounds, never
        missing."""
        return ColumnSpec(type="float", min=self.min, max=self.max, feature=False)


def _target_kind(value: object) -> str:
    return value.get("task", "binary") if isinstance(value, dict) else value.task


TargetSpec = Annotated[
    Annotated[BinaryTarget, Tag("binary")] | Annotated[RegressionTarget, Tag("regression")],
    Discriminator(
        _target_kind,
        custom_error_type="target_task",
        custom_error_message="target.task must be binary (the default) or regression",
    ),
]


class ColumnSpec(_Strict):
    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str | float | int] | None = None
    feature: bool = True
    sensitive: bool = Field(
        default=False,
        description="never read from the source: in no snapshot, quarantine file, report, model or log",
    )
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.type == "category" and not self.categories:
            raise ValueError("a category column needs `categories`")
        if self.feature and self.type not in FEATURE_TYPES:
            raise ValueError(f"a {self.type} column cannot be a model feature: set feature: false")
        if self.sensitive and self.feature:
            raise ValueError(
                "a sensitive column cannot be a model feature (its values are never kept): set feature: false"
            )
        if (self.min is not None or self.max is not None) and self.type not in {"int", "float"}:
            raise ValueError("min/max apply to int and float columns only")
        return self


class DerivedFeature(_Strict):
    """A feature computed from other columns, row by row (no fitted state)."""

    name: str
    op: Literal[tuple(OPS)]  # type: ignore[valid-type]  # the ops in tasks/core/ops.py
    inputs: Annotated[list[str], Field(min_length=1)]

    @model_validator(mode="after")
    def _arity(self) -> DerivedFeature:
        want = OPS[self.op].arity
        if len(self.inputs) != want:
            raise ValueError(f"op {self.op} takes {want} input(s)")
        return self


class SplitSpec(_Strict):
    strategy: Literal["stratified", "random", "time"] = Field(
        default="stratified",
        description="stratified: seeded, within each class (regression: each tenth of the target's range); "
        "random: seeded; time: by event time, latest rows last",
    )
    validation: float = Field(default=0.15, gt=0, lt=0.5)
    test: float = Field(default=0.2, gt=0, lt=0.5)
    seed: int = 42


class QuarantineSpec(_Strict):
    max_fraction: float = Field(
        default=0.05, ge=0, le=1, description="share of input rows that may fail before the run fails"
    )
    duplicates: Literal["keep", "drop", "quarantine"] = Field(
        default="quarantine",
        description="exact copies of an earlier row (every column read equal): quarantined ('duplicate of row "
        "N'), dropped and counted, or kept; in every case the split puts all copies of a row on one side",
    )


class SearchParam(_Strict):
    """One dimension of the Optuna search space."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchParam:
        if self.low > self.high:
            raise ValueError(f"search range low {self.low} > high {self.high}")
        return self


DEFAULT_SEARCH_SPACE = {
    "learning_rate": SearchParam(low=0.01, high=0.3, log=True),
    "num_leaves": SearchParam(low=4, high=64, log=True, integer=True),
    "min_child_samples": SearchParam(low=5, high=200, log=True, integer=True),
    "feature_fraction": SearchParam(low=0.4, high=1.0),
    "bagging_fraction": SearchParam(low=0.5, high=1.0),
    "lambda_l1": SearchParam(low=1e-8, high=10.0, log=True),
    "lambda_l2": SearchParam(low=1e-8, high=10.0, log=True),
}


class FeatureSelection(_Strict):
    """Which features the candidate may use, decided on the training split only (the other
    features are still computed and sent; the model never splits on them)."""

    method: Literal["mutual_information", "gain"] = Field(
        default="mutual_information", description="mutual information with the label, or LightGBM gain importance"
    )
    top_k: int | None = Field(default=None, ge=1, description="keep the k best-scored features")
    min_score: float | None = Field(default=None, ge=0, description="keep the features scoring at least this")

    @model_validator(mode="after")
    def _one_rule(self) -> FeatureSelection:
        if (self.top_k is None) == (self.min_score is None):
            raise ValueError("feature_selection needs exactly one of top_k and min_score")
        return self


class TrainingSpec(_Strict):
    """How the LightGBM candidate is tuned: budget, seed and search space."""

    n_trials: int = Field(default=30, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)
    seed: int = 42
    early_stopping_rounds: int = Field(default=50, ge=1)
    max_boost_rounds: int = Field(default=2000, ge=1)
    num_threads: int = Field(default=0, ge=0, description="0: one per core")
    pruner_warmup_steps: int = Field(default=20, ge=0)
    search_space: dict[str, SearchParam] = DEFAULT_SEARCH_SPACE
    feature_selection: FeatureSelection | None = Field(default=None, description="optional: a subset of features")
    calibration: Literal["none", "sigmoid", "isotonic"] = Field(
        default="none", description="fit a calibrator on validation; kept only if it lowers the log loss out of fold"
    )
    objective: Literal["l2", "l1", "huber"] | None = Field(
        default=None, description="regression: LightGBM's loss (default l2); left out of the hashes when unset"
    )


class EvaluationSpec(_Strict):
    threshold: Literal["f1", "youden"] | float = Field(
        default="f1", description="decision threshold, chosen on the validation split"
    )
    slices: list[str] = Field(default=[], description="category columns to report metrics per value")
    cv_folds: int = Field(default=5, ge=2)
    latency_rows: int = Field(default=1000, ge=1)
    explain_rows: int = Field(
        default=2000, ge=1, description="test rows sampled (seeded) for SHAP values: their cost grows with rows"
    )
    protected: list[str] = Field(
        default=[],
        description="columns with categories (or bool) whose groups get fairness figures (selection rate, "
        "TPR, FPR); may be feature: false",
    )
    min_group_rows: int = Field(default=30, ge=1, description="smaller groups are reported, not judged (fairness)")
    calibration_bins: int = Field(default=10, ge=2, description="equal-width bins of the reliability table and ECE")
    bootstrap_rounds: int = Field(default=1000, ge=100, description="resamples of the test rows for 95% intervals")
    error_bins: int = Field(default=4, ge=2, description="quantile bins of each numeric feature in the error analysis")
    error_min_rows: int = Field(default=20, ge=1, description="smaller groups are left out of the error analysis")
    interval_coverage: float | None = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="regression: split-conformal prediction intervals at this coverage (empty: none)",
    )


class DriftPolicy(_Strict):
    """What is watched and when it counts as drift: the inputs (data drift, null rates), the model's
    output (prediction drift) and, on rows whose labels have arrived, the live metric."""

    window: str = Field(
        default="7d",
        pattern=WINDOW_PATTERN,
        description="served rows a scheduled run judges: a duration back from now (7d, 24h) or the last N (5000rows)",
    )
    min_rows: int = Field(default=200, ge=1, description="fewer valid rows: 'insufficient data', not drift")
    drift_share: float = Field(default=0.3, gt=0, le=1, description="share of drifted columns that is drift")
    method: str | None = Field(default=None, description="Evidently drift method (default: by column type)")
    threshold: float | None = Field(default=None, description="per-column drift threshold of `method`")
    prediction_method: str = Field(
        default="psi", description="Evidently method for the served scores (probabilities, predicted values)"
    )
    prediction_threshold: float = Field(
        default=0.2, gt=0, description="served scores vs the champion's test-split scores (PSI > 0.2: moved)"
    )
    target_drift: bool | None = Field(
        default=None,
        description="arrived labels vs the training target (measured with `method`/`threshold`, as the "
        "features, once `min_rows` rows are labelled) count as drift: true, false, or empty: the task's default "
        "(regression yes; binary no: reported only)",
    )
    max_null_rate_increase: float = Field(
        default=0.1, gt=0, le=1, description="a feature whose share of nulls grew by more than this is drift"
    )
    performance_metric: str | None = Field(
        default=None, description="the live metric on labelled rows: one of the task's (default: its first)"
    )
    min_labelled_rows: int = Field(default=100, ge=1, description="fewer labelled rows: the live metric is not judged")
    max_performance_drop: float | None = Field(
        default=None,
        ge=0,
        description="labelled rows scoring worse than the champion's test metric by more is drift: for a metric "
        "better when higher (roc_auc, pr_auc, f1, accuracy, r2) the drop (0.05: AUC 0.85 → below 0.80); for an "
        "error metric (rmse, mae) the rise as a fraction of the test figure (0.3: RMSE over 1.3x the test's). "
        "Empty: the task's (binary 0.05, regression 0.3)",
    )
    dashboard_days: float = Field(
        default=30, gt=0, description="monitoring runs older than this leave the Evidently dashboard"
    )


class RetrainingSpec(_Strict):
    """How a retraining run builds its fresh snapshot from the champion's data and a labelled batch."""

    include_reference: bool = Field(default=True, description="keep the champion's snapshot rows (else: batch only)")
    max_rows: int | None = Field(default=None, ge=1, description="window: drop the oldest reference rows beyond this")
    min_labelled_rows: int = Field(default=100, ge=1, description="fewer labelled new rows: no retraining")


class Guardrails(_Strict):
    """What a new version must hold, judged per version on what it actually served in each step."""

    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="share of its answers that are 5xx or timed out (nginx 499/502/504)"
    )
    max_p95_ms: float = Field(default=500, gt=0, description="95th percentile of its answer times, ms")
    max_prediction_shift: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="largest gap between its and the champion's score distributions (probabilities, predicted "
        "values) on the same traffic "
        "(Kolmogorov-Smirnov statistic: 0 same, 1 disjoint)",
    )
    min_requests: int = Field(
        default=50, ge=1, description="fewer answers (or scored rows) than this in a step: cannot judge, rolls back"
    )
    max_live_metric_drop: float | None = Field(
        default=None,
        ge=0,
        description="labelled rows: its `monitoring.performance_metric` worse than the champion's by more rolls "
        "back (a drop for a metric better when higher, a rise as a fraction of the champion's for rmse or mae); "
        "set, a step also needs `monitoring.min_labelled_rows` labels per version (empty: not judged)",
    )


class StagingSpec(_Strict):
    """A staging endpoint the new version serves first: smoke and guardrail checks there, then approval."""

    port: int = Field(ge=1, le=65535, description="the staging endpoint's port on 127.0.0.1")
    requests: int = Field(default=200, ge=1, description="test-split requests replayed through staging")
    approval: bool = Field(default=True, description="wait for approval (Prefect UI) before production")
    approval_timeout_seconds: float = Field(default=3600, gt=0, description="no answer in time: rejected")


class RolloutPlan(_Strict):
    """How a new version reaches production behind the stable endpoint, and what rolls it back."""

    strategy: Literal["blue_green", "canary", "shadow"] = Field(
        default="blue_green",
        description="blue_green: one switch; canary: traffic shares in steps; shadow: a mirrored copy of live "
        "requests first (answers compared, never returned), then the switch",
    )
    steps: Annotated[list[float], Field(min_length=1)] = Field(
        default=[10, 50, 100], description="canary: percent of requests per step, rising, ending at 100"
    )
    bake_seconds: float = Field(default=300, gt=0, description="each canary step, and the shadow phase, lasts this")
    watch_seconds: float = Field(
        default=300, ge=0, description="after the switch the old version keeps running this long; a breach goes back"
    )
    check_seconds: float = Field(default=5, gt=0, description="how often the guardrails are checked")
    sticky_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="canary: requests with the same value of this header go to the same version",
    )
    guardrails: Guardrails = Guardrails()
    staging: StagingSpec | None = None

    @model_validator(mode="after")
    def _rising_steps(self) -> RolloutPlan:
        steps = self.steps
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError(f"canary steps must rise within (0, 100] and end at 100, got {steps}")
        return self


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    source: SourceSpec
    target: TargetSpec
    id_column: str | None = None
    id_type: Literal["string", "int"] = Field(
        default="string", description="int: ids are whole numbers (JSON numbers); carried as their text"
    )
    event_time_column: str | None = None
    columns: dict[str, ColumnSpec]
    derived_features: list[DerivedFeature] = []
    split: SplitSpec = SplitSpec()
    quarantine: QuarantineSpec = QuarantineSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    gate: list[GateRule] = Field(default=None, description="promotion rules (default: the task's default gate)")
    monitoring: DriftPolicy = DriftPolicy()
    retraining: RetrainingSpec = RetrainingSpec()
    rollout: RolloutPlan = RolloutPlan()
    model_name: str | None = Field(default=None, description="registered model name (default: the dataset name)")
    base_dir: Path = Field(default=Path("."), exclude=True, description="folder relative paths start from")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: object) -> object:
        """The task's defaults where the config leaves them out: the gate and the live metric."""
        if not isinstance(data, dict) or not isinstance(data.get("target"), dict | BaseModel):
            return data
        kind = KINDS.get(_target_kind(data["target"]))
        if kind is None:
            return data  # the target's own validation names the unknown task
        data = dict(data)
        if data.get("gate") is None:
            data["gate"] = kind.default_gate()
        monitoring = data.get("monitoring")
        if monitoring is None or isinstance(monitoring, dict) and monitoring.get("performance_metric") is None:
            data["monitoring"] = {**(monitoring or {}), "performance_metric": kind.live_metrics[0]}
        return data

    @model_validator(mode="after")
    def _references(self) -> DatasetSpec:
        names = set(self.columns)
        special = [c for c in (self.target.column, self.id_column, self.event_time_column) if c]
        for col in special:
            if col in names:
                raise ValueError(f"{col!r} is the target/id/event-time column: do not list it under columns")
        known = names | {d.name for d in self.derived_features}
        for d in self.derived_features:
            missing = [i for i in d.inputs if i not in names]
            if missing:
                raise ValueError(f"derived feature {d.name!r} uses unknown columns {missing}")
            if d.name in names:
                raise ValueError(f"derived feature {d.name!r} clashes with a column")
            if any(self.columns[i].sensitive for i in d.inputs):
                raise ValueError(f"derived feature {d.name!r} uses a sensitive column (never kept)")
            if any(self.columns[i].type not in {"int", "float", "bool"} for i in d.inputs):
                raise ValueError(f"derived feature {d.name!r} needs numeric inputs")
        if self.split.strategy == "time" and not self.event_time_column:
            raise ValueError("split.strategy 'time' needs event_time_column")
        if not known:
            raise ValueError("no feature columns")
        bad_slices = [c for c in self.evaluation.slices if c not in self.categorical_features]
        if bad_slices:
            raise ValueError(f"evaluation.slices must be category feature columns: {bad_slices}")
        grouping = {
            c for c, col in self.columns.items() if (col.categories or col.type == "bool") and not col.sensitive
        }  # a protected column's values are its groups: categories (of any type) or true/false
        bad_groups = [c for c in self.evaluation.protected if c not in grouping]
        if bad_groups:
            raise ValueError(f"evaluation.protected must be read columns with categories: {bad_groups}")
        per_slice = [r for r in self.gate if r.per_slice and not self.evaluation.slices]
        if per_slice:
            raise ValueError("a per_slice gate rule needs evaluation.slices")
        self._fits_the_task()
        return self

    def _fits_the_task(self) -> None:
        """Gate rules and the live metric name metrics, comparators and options of this task kind."""
        kind = KINDS[self.target.task]
        known, name = sorted(kind.metrics_known()), f"a {kind.kind} target"
        for rule in self.gate:
            if rule.metric not in kind.metrics_known():
                raise ValueError(f"gate metric {rule.metric!r} is not a metric of {name}; its metrics: {known}")
            if rule.vs is not None and rule.vs not in ("champion", *kind.baselines):
                raise ValueError(f"gate rule vs {rule.vs!r}: {name} compares with champion or {list(kind.baselines)}")
            if rule.per_slice and rule.metric not in kind.slice_metrics:
                raise ValueError(f"per_slice compares one of {list(kind.slice_metrics)} for {name}")
            if rule.unless_overlap and rule.metric not in kind.bootstrapped:
                raise ValueError(f"unless_overlap needs a metric with intervals: {list(kind.bootstrapped)}")
        metric = self.monitoring.performance_metric
        if metric not in kind.live_metrics:
            raise ValueError(f"monitoring.performance_metric {metric!r}: {name} has {list(kind.live_metrics)}")
        chosen = {"training.objective": self.training.objective is not None,
                  "training.calibration": self.training.calibration != "none"}  # fmt: skip
        for option in (option for option, set_ in chosen.items() if set_ and option not in kind.options):
            raise ValueError(f"{option} does not apply to {name}")

    # -- derived views -------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        """Every column read from the source, in a fixed order. A sensitive column is never read,
        so it never reaches a snapshot, a quarantine file, a report or a model."""
        extra = [c for c in (self.id_column, self.event_time_column) if c]
        return [*extra, *(c for c, col in self.columns.items() if not col.sensitive), self.target.column]

    @property
    def base_features(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.feature]

    @property
    def categorical_features(self) -> list[str]:
        return [name for name in self.base_features if self.columns[name].type == "category"]

    @property
    def feature_names(self) -> list[str]:
        return [*self.base_features, *(d.name for d in self.derived_features)]

    @property
    def registered_model_name(self) -> str:
        return self.model_name or self.name

    @property
    def spec_hash(self) -> str:
        """Hash of everything that shapes the prepared data (not where it is read from, not training)."""
        return self._hash(
            exclude={
                "source",
                "description",
                "base_dir",
                "training",
                "evaluation",
                "gate",
                "model_name",
                "monitoring",
                "retraining",
                "rollout",
            }
        )

    @property
    def training_hash(self) -> str:
        """Hash of what shapes the trained model: the data contract plus the training section."""
        return self._hash(include={"training"}, extra=self.spec_hash)

    def _hash(self, include: set[str] | None = None, exclude: set[str] | None = None, extra: str = "") -> str:
        body = self.model_dump(mode="json", include=include, exclude=exclude)
        kind = KINDS[self.target.task]
        for option in {o for other in KINDS.values() for o in other.options} - kind.options:
            section, key = option.split(".")  # an option this task kind never reads shapes nothing
            body.get(section, {}).pop(key, None)
        if "columns" in body:  # the order of the columns shapes the snapshot and the feature matrix
            body["column_order"] = list(self.columns)
        return hashlib.sha256((json.dumps(body, sort_keys=True) + extra).encode()).hexdigest()[:16]

    def cache_token(self) -> str:
        """Everything in the config that shapes data and models (not where the data is read from,
        not the monitoring, retraining and roll-out policies): any change refreshes the cache."""
        return self._hash(exclude={"source", "description", "base_dir", "monitoring", "retraining", "rollout"})

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def with_source(self, source: str | Path | None) -> DatasetSpec:
        """The same spec reading another file or database URI (a CLI/flow override)."""
        if source is None:
            return self
        text = str(source)
        try:
            if "://" in text and not text.startswith("file://"):
                new = SourceSpec(uri=text, query=self.source.query)
            else:
                new = SourceSpec(path=str(Path(text.removeprefix("file://")).resolve()))
        except ValueError as exc:
            raise SpecError(f"source override {text!r}: {exc}") from exc
        return self.model_copy(update={"source": new})


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key: object, node: yaml.Node, first_line: int) -> None:
        super().__init__(None, None, f"key {key!r} written twice", node.start_mark)
        self.key, self.line, self.first_line = key, node.start_mark.line + 1, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping (at any depth) is an
    error: PyYAML silently keeps the last one. Keys brought in by a `<<` merge may be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class words this one
            if key in first_lines:
                raise _DuplicateKey(key, key_node, first_lines[key])
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """A YAML file of ours (a dataset config, prefect.yaml, a bentofile): a key written twice or
    text that is not YAML is a `SpecError` naming the file and the line."""
    text = path.read_text()
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except _DuplicateKey as exc:
        raise SpecError(
            f"{path}, line {exc.line}: key `{exc.key}` is written twice in one mapping (first on line "
            f"{exc.first_line}); only one would be taken, so remove the other"
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc


def load_spec(path: str | Path, source: str | Path | None = None, n_trials: int | None = None) -> DatasetSpec:
    """Read a dataset config; relative paths inside it start from the config's folder.

    `source` reads another file or database; `n_trials` overrides the tuning budget."""
    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError as exc:
        raise SpecError(f"dataset config not found: {path}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    if n_trials is not None:  # validated with the rest (a budget below 1 is refused, not run)
        raw = {**raw, "training": {**(raw.get("training") or {}), "n_trials": n_trials}}
    try:
        spec = DatasetSpec.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValueError as exc:
        raise SpecError(f"{path}: {exc}") from exc
    return spec.with_source(source)


# -- declared types ---------------------------------------------------------------------
def polars_dtype(kind: ColumnType) -> pl.DataType:
    return {
        "int": pl.Int64,
        "float": pl.Float64,
        "bool": pl.Boolean,
        "category": pl.String,
        "string": pl.String,
        "datetime": pl.Datetime("us"),
    }[kind]


def typed_categories(col: ColumnSpec) -> list:
    cats = col.categories or []
    if col.type == "int":
        return [int(c) for c in cats]
    if col.type == "float":
        return [float(c) for c in cats]
    if col.type == "bool":
        return [bool(c) for c in cats]
    return [text_form(c) for c in cats]


def column_kinds(spec: DatasetSpec) -> dict[str, str]:
    kinds = {name: c.type for name, c in spec.columns.items()}
    if spec.id_column:
        kinds[spec.id_column] = "string"
    if spec.event_time_column:
        kinds[spec.event_time_column] = "datetime"
    kinds[spec.target.column] = spec.target.as_column().type
    return kinds


def declared_columns(spec: DatasetSpec) -> dict[str, ColumnSpec]:
    """The contract of every read column with one, the target's (`as_column`) last; the id and the
    event time have fixed rules of their own."""
    return memo(
        spec,
        "declared_columns",
        lambda: {
            **{name: col for name, col in spec.columns.items() if not col.sensitive},
            spec.target.column: spec.target.as_column(),
        },
    )


_MEMO: dict[tuple[int, str], object] = {}


def memo(spec: DatasetSpec, key: str, build):
    """A value derived from one (immutable) spec object, built once and dropped with it:
    compiled expressions, generated request models."""
    slot = (id(spec), key)
    if slot not in _MEMO:
        _MEMO[slot] = build()
        weakref.finalize(spec, _MEMO.pop, slot, None)
    return _MEMO[slot]
