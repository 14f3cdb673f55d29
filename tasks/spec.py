"""The dataset contract: a YAML config loaded into a typed `DatasetSpec`.

A user brings a new table by writing one of these files; nothing else in the
project names a column. The Pandera schema is derived from the spec.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import SpecError

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
    def spec_hash(self) -> str:
        """Hash of everything that shapes the prepared data, except where it is read from."""
        body = self.model_dump(mode="json", exclude={"source", "description", "base_dir"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def cache_token(self) -> str:
        return self.spec_hash

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


def load_spec(path: str | Path, source: str | Path | None = None) -> DatasetSpec:
    """Read a dataset config; relative paths inside it start from the config's folder."""
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


def build_schema(spec: DatasetSpec):
    """The `pandera.polars` schema of a typed frame with the spec's input columns."""
    import pandera.polars as pa

    columns: dict[str, pa.Column] = {}
    if spec.id_column:
        columns[spec.id_column] = pa.Column(pl.String, nullable=False, unique=True)
    if spec.event_time_column:
        columns[spec.event_time_column] = pa.Column(polars_dtype("datetime"), nullable=False)
    for name, col in spec.columns.items():
        checks = []
        if col.min is not None or col.max is not None:
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks.append(pa.Check.in_range(lo, hi))
        if col.categories is not None:
            checks.append(pa.Check.isin(_typed_categories(col)))
        columns[name] = pa.Column(polars_dtype(col.type), checks=checks, nullable=col.nullable)
    columns[spec.target.column] = pa.Column(pl.String, checks=[pa.Check.isin(spec.target.labels)], nullable=False)
    return pa.DataFrameSchema(columns, strict=True, ordered=False, name=spec.name)


def _typed_categories(col: ColumnSpec) -> list:
    cats = col.categories or []
    if col.type == "int":
        return [int(c) for c in cats]
    if col.type == "float":
        return [float(c) for c in cats]
    if col.type == "bool":
        return [bool(c) for c in cats]
    return [str(c) for c in cats]
