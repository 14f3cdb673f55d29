"""The data profile made at prepare, before any training: per column its type, missing share,
distribution (numbers: mean, spread, quantiles; categories: the most frequent) and association
with the target. Pure Polars: a table in, a row per column out."""

from __future__ import annotations

import math

import polars as pl

from tasks.core.spec import DatasetSpec, declared_columns
from tasks.core.task.kinds import task_of

TOP_CATEGORIES = 5


def profile_rows(frame: pl.DataFrame, spec: DatasetSpec) -> list[dict]:
    """One row per input column of `spec` in `frame` (the target last): what a reviewer reads
    before trusting a model trained on it. `association` is with the target as a number (the
    task's encoding: 1 for a binary target's positive label, the value of a regression target):
    Pearson's r for a number column, the correlation ratio η for a category or text column (for a
    binary target η is Cramér's V)."""
    target = pl.Series(task_of(spec).encode(frame.get_column(spec.target.column))).cast(pl.Float64).fill_nan(None)
    declared, rows = declared_columns(spec), []
    for name in spec.input_columns:
        if name not in frame.columns:
            continue
        column = frame.get_column(name)
        col = declared.get(name)
        kind = col.type if col else "string"
        row = {
            "column": name,
            "type": kind,
            "feature": bool(col and col.feature),
            "rows": frame.height,
            "missing_share": _share(column.null_count() + _nans(column), frame.height),
            "distinct": column.n_unique(),
        }
        numeric = kind in ("int", "float", "bool") and column.dtype.is_numeric() or column.dtype == pl.Boolean
        if numeric and not (col and col.categories):
            values = column.cast(pl.Float64).fill_nan(None)
            row |= {
                "mean": values.mean(),
                "std": values.std(),
                "min": values.min(),
                "median": values.median(),
                "max": values.max(),
                "association": _pearson(values, target) if name != spec.target.column else None,
            }
        else:
            text = column.cast(pl.String).fill_null("<null>")
            counts = text.value_counts(sort=True).head(TOP_CATEGORIES)
            row["top"] = ", ".join(f"{v} {_share(n, frame.height):.0%}" for v, n in counts.iter_rows())
            row["association"] = _correlation_ratio(text, target) if name != spec.target.column else None
        rows.append(row)
    return rows


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _nans(column: pl.Series) -> int:
    return int(column.is_nan().sum()) if column.dtype.is_float() else 0


def _pearson(values: pl.Series, target: pl.Series) -> float | None:
    both = pl.DataFrame({"x": values, "y": target}).drop_nulls()
    if both.height < 2:
        return None
    r = both.select(pl.corr("x", "y")).item()
    return None if r is None or math.isnan(r) else float(r)


def _correlation_ratio(text: pl.Series, target: pl.Series) -> float | None:
    """η = sqrt(between-group sum of squares / total sum of squares) of the target over the column's
    values; for a 0/1 target this is sqrt(chi² / n), Cramér's V of the 2 × k table."""
    both = pl.DataFrame({"v": text, "y": target}).drop_nulls("y")
    groups = both.group_by("v").agg(pl.len().alias("n"), pl.col("y").mean().alias("mean"))
    mean = both.get_column("y").mean()
    total = both.select(((pl.col("y") - mean) ** 2).sum()).item() if both.height else 0.0
    if not total or groups.height < 2:
        return None
    between = groups.select((pl.col("n") * (pl.col("mean") - mean) ** 2).sum()).item()
    return float(math.sqrt(between / total))
