"""The data contract as a Pandera schema, and the finder of every row that breaks it.

Pandera (and pandas with it, ~50 MB and 0.5 s) is imported only where it is asked for reasons: a
serving process whose files are valid never loads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tasks.core.cast import FAILURE_SCHEMA, cast_exprs, cast_to_spec
from tasks.core.errors import SpecError
from tasks.core.features import category_enum, encode_exprs
from tasks.core.spec import DatasetSpec, column_kinds, declared_columns, polars_dtype, typed_categories

if TYPE_CHECKING:
    import pandera.polars as pa


def build_schema(spec: DatasetSpec, columns: list[str] | None = None):
    """The `pandera.polars` schema of a typed frame with the spec's input columns (or a subset)."""
    import pandera.polars as pa

    schema: dict[str, pa.Column] = {}
    if spec.id_column:
        schema[spec.id_column] = pa.Column(pl.String, nullable=False, unique=True)
    if spec.event_time_column:
        schema[spec.event_time_column] = pa.Column(polars_dtype("datetime"), nullable=False)
    for name, col in declared_columns(spec).items():  # the target too: `spec.target.as_column()`
        checks = []
        if col.min is not None or col.max is not None:
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks.append(pa.Check.in_range(lo, hi))
        if col.categories is not None:
            checks.append(pa.Check.isin(typed_categories(col)))
        schema[name] = pa.Column(polars_dtype(col.type), checks=checks, nullable=col.nullable)
    if columns is not None:
        schema = {name: schema[name] for name in columns}
    return pa.DataFrameSchema(schema, strict=True, ordered=False, name=spec.name)


def schema_holds(typed: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None) -> bool:
    """True when every row passes `build_schema` — the same rules in one Polars pass, several
    times cheaper than Pandera's check-by-check run. Pandera still finds and words the failures
    whenever this is False (tests hold the two to the same verdict)."""
    rules = schema_rules(typed.schema, spec, columns)
    if rules is None:
        return False
    return typed.height == 0 or not rules or bool(typed.select(pl.all_horizontal(rules).all()).item())


def schema_rules(schema: pl.Schema, spec: DatasetSpec, columns: list[str] | None = None) -> list[pl.Expr] | None:
    """`build_schema`'s rules as one row-wise boolean expression per column of a typed frame with
    this `schema`; None when a column does not have its declared type."""
    kinds, declared, rules = column_kinds(spec), declared_columns(spec), []
    for name in spec.input_columns if columns is None else columns:
        if schema.get(name) != polars_dtype(kinds[name]):
            return None
        c, col = pl.col(name), declared.get(name)
        checks = pl.lit(True)
        if col is not None and (col.min is not None or col.max is not None):
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks = checks & c.ge(lo) & c.le(hi)
        if col is not None and col.categories is not None:
            checks = checks & c.is_in(typed_categories(col))
        ok = checks.fill_null(True)  # checks skip nulls; nullability decides (NaN counts as null)
        if not (col is not None and col.nullable):
            ok = ok & c.is_not_null() & (c.is_not_nan() if kinds[name] == "float" else True)
        if name == spec.id_column:
            ok = ok & c.is_duplicated().not_()
        rules.append(ok)
    return rules


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


def typed_and_encoded(raw: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, np.ndarray] | None:
    """For a table whose every row is valid: its base features cast to their types (categories
    kept as their `category_enum`) and the model's feature matrix (C order), in one
    lazy pass. None when any value fails (or there are no rows, or a configured category has
    surrounding spaces): `typed_with_failures` then finds and words the failures. Where it answers,
    it is the two-step path's answer (tests hold the two to it, Enums read as their text).

    Cheaper because each category column is looked up once: the shared encoding's strict cast to the
    category list fails on any value that is not exactly a category, so such a value needs no trim
    (it has no surrounding spaces) and no separate membership check."""
    categorical = set(spec.categorical_features)
    listed = [str(c) for name in categorical for c in spec.columns[name].categories or []]
    if raw.height == 0 or any(c != c.strip() for c in listed):
        return None
    columns, kinds = spec.base_features, column_kinds(spec)
    numeric = [name for name in columns if name not in categorical]
    casts = dict(zip(numeric, cast_exprs(raw.schema, spec, numeric), strict=True))
    casts |= {name: pl.col(name).cast(pl.String).cast(category_enum(spec, name)) for name in categorical}
    typed = [casts[name] for name in columns]
    lost = pl.any_horizontal(pl.lit(False), *(pl.col(name).is_not_null() & casts[name].is_null() for name in numeric))
    rules = schema_rules(pl.Schema({name: polars_dtype(kinds[name]) for name in numeric}), spec, numeric)
    rules += [pl.col(name).is_not_null() for name in categorical if not spec.columns[name].nullable]
    names = [f"__feature_{i}" for i in range(len(spec.feature_names))]
    encoded = [expr.alias(name) for expr, name in zip(encode_exprs(spec, coded=True), names, strict=True)]
    try:
        out = (
            raw.lazy()
            .select(*typed, lost.any().alias("__lost"))
            .with_columns(*encoded, pl.all_horizontal(pl.lit(True), *rules).all().alias("__holds"))
            .collect()
        )
    except pl.exceptions.InvalidOperationError:  # a value that is not one of its column's categories
        return None
    if out.item(0, "__lost") or not out.item(0, "__holds"):
        return None
    return out.select(columns), out.select(names).to_numpy(order="c")


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
