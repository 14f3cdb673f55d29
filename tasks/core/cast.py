"""Applying the spec's declared types to raw values: one rule for every input path (files,
requests, batches), shared by training and serving. Text values (categories, strings, the id, a
target's labels) are trimmed of surrounding whitespace (`tasks.core.spec.text_form` is the same rule
for JSON). The target is cast as its contract says (`spec.target.as_column()`): a label, or a number.
A number column's NaN or infinity never passes (`finite_number`), the target's included."""

from __future__ import annotations

import polars as pl

from tasks.core.errors import DataError, SpecError
from tasks.core.spec import DatasetSpec, column_kinds, polars_dtype

# one row per bad value: where it is, which check it failed, what it was
FAILURE_SCHEMA = {"row": pl.Int64, "column": pl.String, "check": pl.String, "value": pl.String}
# a number column's NaN or infinity (text or value): refused as JSON's is (pydantic's `finite_number`)
NOT_FINITE = "finite_number"


def _cast_expr(name: str, kind: str, source_dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if kind in ("category", "string"):
        return col.cast(pl.String).str.strip_chars()
    if kind == "float":
        as_float = _as_text_if_string(col, source_dtype).cast(pl.Float64, strict=False)
        return pl.when(as_float.is_finite()).then(as_float)
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


def _parsed_kinds(spec: DatasetSpec) -> dict[str, str]:
    """The type each column's values are parsed as: its declared kind, but an int id is checked as
    a whole number (and carried as its text)."""
    kinds = column_kinds(spec)
    if spec.id_column and spec.id_type == "int":
        kinds[spec.id_column] = "int"
    return kinds


def cast_exprs(schema: pl.Schema, spec: DatasetSpec, columns: list[str]) -> list[pl.Expr]:
    """The expressions casting `columns` of a frame with this `schema` to their declared types."""
    kinds = _parsed_kinds(spec)
    exprs = [_cast_expr(name, kinds[name], schema[name]) for name in columns]
    exprs = [e.cast(pl.String) if name == spec.id_column else e for name, e in zip(columns, exprs, strict=True)]
    return [e.alias(name) for name, e in zip(columns, exprs, strict=True)]


def cast_to_spec(
    raw: pl.DataFrame, spec: DatasetSpec, columns: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast columns (default: all input columns) to their declared types; a value that does
    not parse becomes null and one failure row (row, column, check `dtype(<type>)`, or `finite_number`
    for a number's NaN or infinity, value)."""
    columns = spec.input_columns if columns is None else columns
    raw = raw.select(columns)
    typed = raw.select(cast_exprs(raw.schema, spec, columns))
    kinds = _parsed_kinds(spec)
    lost_to_type = {n: raw.get_column(n).is_not_null() & typed.get_column(n).is_null() for n in columns}
    if not any(mask.any() for mask in lost_to_type.values()):
        return typed, pl.DataFrame(schema=FAILURE_SCHEMA)
    lost = [
        raw.with_row_index("row")
        .filter(lost_to_type[name])
        .select(
            pl.col("row").cast(pl.Int64),
            pl.lit(name).alias("column"),
            _failed_check(name, kinds[name], raw.schema[name]).alias("check"),
            pl.col(name).cast(pl.String).alias("value"),
        )
        for name in columns
    ]
    return typed, pl.concat(lost).cast(FAILURE_SCHEMA)


def _failed_check(name: str, kind: str, source_dtype: pl.DataType) -> pl.Expr:
    """The check a value that did not cast failed: `finite_number` for a number column's NaN or
    infinity (not a type or range problem), else `dtype(<type>)`."""
    check = pl.lit(f"dtype({kind})")
    if kind not in ("int", "float") or not (source_dtype == pl.String or source_dtype.is_float()):
        return check
    as_float = _as_text_if_string(pl.col(name), source_dtype).cast(pl.Float64, strict=False)
    return pl.when(as_float.is_nan() | as_float.is_infinite()).then(pl.lit(NOT_FINITE)).otherwise(check)


def clean(kept: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Cast validated rows to their declared types (strictly: they passed validation)."""
    typed, failures = cast_to_spec(kept, spec)
    if failures.height:
        raise DataError(f"{failures.height} values failed to cast after validation: {failures.head(3).rows()}")
    kinds = column_kinds(spec)
    return typed.cast({name: polars_dtype(kinds[name]) for name in typed.columns})  # the input columns
