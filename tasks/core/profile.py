"""The data profile made at prepare, before any training: per column its type, missing share,
distribution (numbers: mean, spread, quantiles; categories: the most frequent) and association
with the target. Pure Polars: a table in, a row per column out."""

from __future__ import annotations

import math

import polars as pl

from tasks.core.spec import DatasetSpec

TOP_CATEGORIES = 5


def profile_rows(frame: pl.DataFrame, spec: DatasetSpec) -> list[dict]:
    """One row per input column of `spec` in `frame` (the target last): what a reviewer reads
    before trusting a model trained on it. `association` is Pearson's r with the positive label
    for a number, Cramér's V with the label for a category or text column."""
    target = (frame.get_column(spec.target.column) == spec.target.positive).cast(pl.Float64)
    rows = []
    for name in spec.input_columns:
        if name not in frame.columns:
            continue
        column = frame.get_column(name)
        col = spec.columns.get(name)
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
            row["association"] = _cramers_v(text, target) if name != spec.target.column else None
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


def _cramers_v(text: pl.Series, target: pl.Series) -> float | None:
    """Cramér's V of a category column against the binary label: sqrt(chi² / n) (min(r, 2) − 1 = 1)."""
    table = (
        pl.DataFrame({"v": text, "y": target}).group_by("v").agg(pl.len().alias("n"), pl.col("y").sum().alias("pos"))
    )
    n, positives = float(table["n"].sum()), float(table["pos"].sum())
    if n == 0 or positives in (0.0, n) or table.height < 2:
        return None
    chi2 = 0.0
    for rows, pos in table.select("n", "pos").iter_rows():
        for observed, share in ((pos, positives / n), (rows - pos, 1 - positives / n)):
            expected = rows * share
            chi2 += (observed - expected) ** 2 / expected
    return float(math.sqrt(chi2 / n))
