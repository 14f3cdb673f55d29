"""The dataset contract: a YAML config loaded into a typed `DatasetSpec`.

A user brings a new table by writing one of these files; nothing else in the
project names a column. The Pandera schema is derived from the spec.
"""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import DataError, SpecError

FAILURE_SCHEMA = {"row": pl.Int64, "column": pl.String, "check": pl.String, "value": pl.String}
ColumnType = Literal["int", "float", "bool", "category", "string", "datetime"]
FEATURE_TYPES = {"int", "float", "bool", "category"}


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


class TargetSpec(_Strict):
    column: str
    positive: str = Field(description="label of the positive class")
    labels: Annotated[list[str], Field(min_length=2, max_length=2)]

    @model_validator(mode="after")
    def _positive_is_a_label(self) -> TargetSpec:
        if self.positive not in self.labels:
            raise ValueError(f"positive label {self.positive!r} is not one of {self.labels}")
        return self


class ColumnSpec(_Strict):
    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str | float | int] | None = None
    feature: bool = True
    sensitive: bool = Field(default=False, description="never written to prediction logs")
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.type == "category" and not self.categories:
            raise ValueError("a category column needs `categories`")
        if self.feature and self.type not in FEATURE_TYPES:
            raise ValueError(f"a {self.type} column cannot be a model feature: set feature: false")
        if (self.min is not None or self.max is not None) and self.type not in {"int", "float"}:
            raise ValueError("min/max apply to int and float columns only")
        return self


class DerivedFeature(_Strict):
    """A feature computed from other columns, row by row (no fitted state)."""

    name: str
    op: Literal["ratio", "difference", "product", "log1p"]
    inputs: Annotated[list[str], Field(min_length=1, max_length=2)]

    @model_validator(mode="after")
    def _arity(self) -> DerivedFeature:
        want = 1 if self.op == "log1p" else 2
        if len(self.inputs) != want:
            raise ValueError(f"op {self.op} takes {want} input(s)")
        return self


class SplitSpec(_Strict):
    strategy: Literal["stratified", "time"] = "stratified"
    validation: float = Field(default=0.15, gt=0, lt=0.5)
    test: float = Field(default=0.2, gt=0, lt=0.5)
    seed: int = 42


class QuarantineSpec(_Strict):
    max_fraction: float = Field(
        default=0.05, ge=0, le=1, description="share of input rows that may fail before the run fails"
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


HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "cv_roc_auc_mean"}
LOWER_IS_BETTER = {"log_loss", "brier", "latency_ms_per_row", "cv_roc_auc_std"}
COMPARATORS = ("champion", "logistic_regression", "majority_class")


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


class GateRule(_Strict):
    """One promotion rule: a bound (`min`/`max`) or a comparison (`vs` with `max_drop`)."""

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


class DriftPolicy(_Strict):
    """When a batch of new rows counts as drift (data drift, and performance drift when labelled)."""

    min_rows: int = Field(default=200, ge=1, description="fewer valid rows: 'insufficient data', not drift")
    drift_share: float = Field(default=0.3, gt=0, le=1, description="share of drifted columns that is drift")
    method: str | None = Field(default=None, description="Evidently drift method (default: by column type)")
    threshold: float | None = Field(default=None, description="per-column drift threshold of `method`")
    performance_metric: Literal["roc_auc", "pr_auc", "f1", "accuracy"] = "roc_auc"
    max_performance_drop: float = Field(
        default=0.05,
        ge=0,
        description="a labelled batch scoring worse than the champion's test metric by more is drift",
    )


class RetrainingSpec(_Strict):
    """How a retraining run builds its fresh snapshot from the champion's data and a labelled batch."""

    include_reference: bool = Field(default=True, description="keep the champion's snapshot rows (else: batch only)")
    max_rows: int | None = Field(default=None, ge=1, description="window: drop the oldest reference rows beyond this")
    min_labelled_rows: int = Field(default=100, ge=1, description="fewer labelled new rows: no retraining")


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    source: SourceSpec
    target: TargetSpec
    id_column: str | None = None
    event_time_column: str | None = None
    columns: dict[str, ColumnSpec]
    derived_features: list[DerivedFeature] = []
    split: SplitSpec = SplitSpec()
    quarantine: QuarantineSpec = QuarantineSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    gate: list[GateRule] = DEFAULT_GATE
    monitoring: DriftPolicy = DriftPolicy()
    retraining: RetrainingSpec = RetrainingSpec()
    model_name: str | None = Field(default=None, description="registered model name (default: the dataset name)")
    base_dir: Path = Field(default=Path("."), exclude=True, description="folder relative paths start from")

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
            if any(self.columns[i].type not in {"int", "float", "bool"} for i in d.inputs):
                raise ValueError(f"derived feature {d.name!r} needs numeric inputs")
        if self.split.strategy == "time" and not self.event_time_column:
            raise ValueError("split.strategy 'time' needs event_time_column")
        if not known:
            raise ValueError("no feature columns")
        bad_slices = [c for c in self.evaluation.slices if c not in self.categorical_features]
        if bad_slices:
            raise ValueError(f"evaluation.slices must be category feature columns: {bad_slices}")
        return self

    # -- derived views -------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        """Every column read from the source, in a fixed order."""
        extra = [c for c in (self.id_column, self.event_time_column) if c]
        return [*extra, *self.columns, self.target.column]

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
            }
        )

    @property
    def training_hash(self) -> str:
        """Hash of what shapes the trained model: the data contract plus the training section."""
        return self._hash(include={"training"}, extra=self.spec_hash)

    def _hash(self, include: set[str] | None = None, exclude: set[str] | None = None, extra: str = "") -> str:
        body = self.model_dump(mode="json", include=include, exclude=exclude)
        return hashlib.sha256((json.dumps(body, sort_keys=True) + extra).encode()).hexdigest()[:16]

    def cache_token(self) -> str:
        """Everything in the config that shapes data and models (not where the data is read from,
        not the monitoring and retraining policies): any change refreshes the cache."""
        return self._hash(exclude={"source", "description", "base_dir", "monitoring", "retraining"})

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


def load_spec(path: str | Path, source: str | Path | None = None, n_trials: int | None = None) -> DatasetSpec:
    """Read a dataset config; relative paths inside it start from the config's folder.

    `source` reads another file or database; `n_trials` overrides the tuning budget."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"dataset config not found: {path}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        spec = DatasetSpec.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValueError as exc:
        raise SpecError(f"{path}: {exc}") from exc
    if n_trials is not None:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"n_trials": int(n_trials)})})
    return spec.with_source(source)


# -- Pandera ---------------------------------------------------------------------------
def polars_dtype(kind: ColumnType) -> pl.DataType:
    return {
        "int": pl.Int64,
        "float": pl.Float64,
        "bool": pl.Boolean,
        "category": pl.String,
        "string": pl.String,
        "datetime": pl.Datetime("us"),
    }[kind]


def build_schema(spec: DatasetSpec, columns: list[str] | None = None):
    """The `pandera.polars` schema of a typed frame with the spec's input columns (or a subset)."""
    import pandera.polars as pa

    schema: dict[str, pa.Column] = {}
    if spec.id_column:
        schema[spec.id_column] = pa.Column(pl.String, nullable=False, unique=True)
    if spec.event_time_column:
        schema[spec.event_time_column] = pa.Column(polars_dtype("datetime"), nullable=False)
    for name, col in spec.columns.items():
        checks = []
        if col.min is not None or col.max is not None:
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks.append(pa.Check.in_range(lo, hi))
        if col.categories is not None:
            checks.append(pa.Check.isin(_typed_categories(col)))
        schema[name] = pa.Column(polars_dtype(col.type), checks=checks, nullable=col.nullable)
    schema[spec.target.column] = pa.Column(pl.String, checks=[pa.Check.isin(spec.target.labels)], nullable=False)
    if columns is not None:
        schema = {name: schema[name] for name in columns}
    return pa.DataFrameSchema(schema, strict=True, ordered=False, name=spec.name)


def schema_holds(typed: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None) -> bool:
    """True when every row passes `build_schema` — the same rules in one Polars pass, several
    times cheaper than Pandera's check-by-check run. Pandera still finds and words the failures
    whenever this is False (tests hold the two to the same verdict)."""
    kinds, rules = _column_kinds(spec), []
    for name in spec.input_columns if columns is None else columns:
        if typed.schema.get(name) != polars_dtype(kinds[name]):
            return False
        c, col = pl.col(name), spec.columns.get(name)
        checks = pl.lit(True)
        if col is not None and (col.min is not None or col.max is not None):
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks = checks & c.ge(lo) & c.le(hi)
        if col is not None and col.categories is not None:
            checks = checks & c.is_in(_typed_categories(col))
        if name == spec.target.column:
            checks = checks & c.is_in(spec.target.labels)
        ok = checks.fill_null(True)  # checks skip nulls; nullability decides (NaN counts as null)
        if not (col is not None and col.nullable):
            ok = ok & c.is_not_null() & (c.is_not_nan() if kinds[name] == "float" else True)
        if name == spec.id_column:
            ok = ok & c.is_duplicated().not_()
        rules.append(ok)
    return typed.height == 0 or not rules or bool(typed.select(pl.all_horizontal(rules).all()).item())


def _typed_categories(col: ColumnSpec) -> list:
    cats = col.categories or []
    if col.type == "int":
        return [int(c) for c in cats]
    if col.type == "float":
        return [float(c) for c in cats]
    if col.type == "bool":
        return [bool(c) for c in cats]
    return [str(c) for c in cats]


# -- applying the spec's types (shared by training and serving) -------------------------
def _cast_expr(name: str, kind: str, source_dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if kind in ("category", "string"):
        return col.cast(pl.String).str.strip_chars()
    if kind == "float":
        return _as_text_if_string(col, source_dtype).cast(pl.Float64, strict=False)
    if kind == "int":
        as_float = _as_text_if_string(col, source_dtype).cast(pl.Float64, strict=False)
        return pl.when(as_float == as_float.floor()).then(as_float).otherwise(None).cast(pl.Int64, strict=False)
    if kind == "bool":
        if source_dtype == pl.Boolean:
            return col
        text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
        return text.replace_strict(
            {"true": True, "1": True, "1.0": True, "yes": True, "false": False, "0": False, "0.0": False, "no": False},
            default=None,
            return_dtype=pl.Boolean,
        )
    if kind == "datetime":
        if source_dtype.is_temporal():
            return col.cast(pl.Datetime("us"), strict=False)
        return col.cast(pl.String).str.strip_chars().str.to_datetime(time_unit="us", strict=False)
    raise SpecError(f"unknown column type {kind!r}")


def _as_text_if_string(col: pl.Expr, source_dtype: pl.DataType) -> pl.Expr:
    return col.str.strip_chars() if source_dtype == pl.String else col


def _column_kinds(spec: DatasetSpec) -> dict[str, str]:
    kinds = {name: c.type for name, c in spec.columns.items()}
    if spec.id_column:
        kinds[spec.id_column] = "string"
    if spec.event_time_column:
        kinds[spec.event_time_column] = "datetime"
    kinds[spec.target.column] = "string"
    return kinds


def cast_to_spec(
    raw: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast columns (default: all input columns) to their declared types; a value that does
    not parse becomes null and one failure row (row, column, check `dtype(<type>)`, value)."""
    kinds = _column_kinds(spec)
    columns = spec.input_columns if columns is None else columns
    raw = raw.select(columns)
    typed = raw.select(_cast_expr(name, kinds[name], raw.schema[name]).alias(name) for name in columns)
    lost_to_type = {n: raw.get_column(n).is_not_null() & typed.get_column(n).is_null() for n in columns}
    if not any(mask.any() for mask in lost_to_type.values()):
        return typed, pl.DataFrame(schema=FAILURE_SCHEMA)
    lost = [
        raw.with_row_index("row")
        .filter(lost_to_type[name])
        .select(
            pl.col("row").cast(pl.Int64),
            pl.lit(name).alias("column"),
            pl.lit(f"dtype({kinds[name]})").alias("check"),
            pl.col(name).cast(pl.String).alias("value"),
        )
        for name in columns
    ]
    return typed, pl.concat(lost).cast(FAILURE_SCHEMA)


def clean(kept: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Cast validated rows to their declared types (strictly: they passed validation)."""
    typed, failures = cast_to_spec(kept, spec)
    if failures.height:
        raise DataError(f"{failures.height} values failed to cast after validation: {failures.head(3).rows()}")
    return typed.cast({name: polars_dtype(kind) for name, kind in _column_kinds(spec).items()})


def schema_failures(typed: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None) -> pl.DataFrame:
    """Every row-level failure Pandera finds (lazy: all checks, all rows)."""
    import pandera.polars as pa

    try:
        build_schema(spec, columns).validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return pl.DataFrame(schema=FAILURE_SCHEMA)
    frame_level = cases.filter(pl.col("index").is_null())
    if frame_level.height:
        problems = "; ".join(f"{r['column']}: {r['check']}" for r in frame_level.iter_rows(named=True))
        raise SpecError(f"the data does not fit the schema of {spec.name!r} as a whole: {problems}")
    rows = cases.select(
        pl.col("index").cast(pl.Int64).alias("row"),
        pl.col("column").cast(pl.String),
        pl.col("check").cast(pl.String),
        pl.col("failure_case").cast(pl.String).alias("value"),
    )
    # A duplicated id keeps its first occurrence; the later ones are the failures.
    is_dup = pl.col("check") == "field_uniqueness"
    first_seen = pl.col("row") == pl.col("row").min().over("column", "value")
    return rows.filter(~(is_dup & first_seen))


def find_failures(raw: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None) -> pl.DataFrame:
    """All failures, type errors first; a null caused by a type error is not reported twice."""
    return typed_with_failures(raw, spec, columns)[1]


def typed_with_failures(
    raw: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The columns cast to their types (a value that does not parse is null) and every failure."""
    typed, type_failures = cast_to_spec(raw, spec, columns)
    if type_failures.height == 0 and schema_holds(typed, spec, columns):
        return typed, type_failures
    checks = schema_failures(typed, spec, columns).join(
        type_failures.select("row", "column"), on=["row", "column"], how="anti"
    )
    return typed, pl.concat([type_failures, checks]).sort("row", maintain_order=True)


_MEMO: dict[tuple[int, str], object] = {}


def memo(spec: DatasetSpec, key: str, build):
    """A value derived from one (immutable) spec object, built once and dropped with it:
    compiled expressions, generated request models."""
    slot = (id(spec), key)
    if slot not in _MEMO:
        _MEMO[slot] = build()
        weakref.finalize(spec, _MEMO.pop, slot, None)
    return _MEMO[slot]


# -- the request schema of the served model -------------------------------------------------
def record_model(spec: DatasetSpec) -> type[BaseModel]:
    """A pydantic model of one input record, generated from the spec: types (strict), ranges,
    categories, nullability; unknown fields are rejected. Serving validates requests with it."""
    from datetime import datetime
    from typing import Annotated, Literal

    from pydantic import create_model

    def annotation(col: ColumnSpec):
        if col.categories is not None:
            return Literal[tuple(_typed_categories(col))]
        bounds = {"ge": col.min, "le": col.max}
        if col.type == "int":
            return Annotated[int, Field(strict=True, **bounds)]
        if col.type == "float":
            return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]
        if col.type == "bool":
            return Annotated[bool, Field(strict=True)]
        if col.type == "datetime":
            return datetime
        return Annotated[str, Field(max_length=10_000)]

    def build() -> type[BaseModel]:
        fields: dict = {}
        if spec.id_column:
            fields[spec.id_column] = (str | None, Field(default=None, max_length=256))
        for name, col in spec.columns.items():
            kind = annotation(col)
            required = col.feature and not col.nullable
            fields[name] = (kind, Field(description=col.description)) if required else (kind | None, None)
        title = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", spec.name)) + "Record"
        return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)

    return memo(spec, "record_model", build)


def records_frame(records: list[dict], spec: DatasetSpec) -> pl.DataFrame:
    """Validated records → a frame typed as the spec declares (no parsing needed)."""

    def build() -> dict:
        kinds = _column_kinds(spec)
        return {c: polars_dtype(kinds[c]) for c in (spec.id_column, *spec.columns) if c}

    schema = memo(spec, "record_schema", build)
    return pl.DataFrame(records, schema=schema, orient="row") if records else pl.DataFrame(schema=schema)


def example_record(spec: DatasetSpec) -> dict:
    """A valid record built from the spec alone (mid-range numbers, first categories)."""
    record: dict = {}
    for name, col in spec.columns.items():
        if not col.feature:
            continue
        if col.categories is not None:
            record[name] = _typed_categories(col)[0]
        elif col.type in ("int", "float"):
            lo = col.min if col.min is not None else 0.0
            hi = col.max if col.max is not None else lo + 2.0
            mid = (lo + hi) / 2
            record[name] = int(mid) if col.type == "int" else float(mid)
        elif col.type == "bool":
            record[name] = False
    return record
