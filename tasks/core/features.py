"""Feature transforms in pure Polars — the one copy used by training and serving.

Every transform is row-wise and driven by the `DatasetSpec`: no fitted state, so
the same function gives the same features for a training table and for one
request record. `row_encoder` is the per-record twin of `feature_matrix` for serving single
records without building a frame: generated from the same declarations (category codes taken from
the Polars path itself, derived features from the ops' row rules) and proven equal to it by
`tests/unit/test_rowwise.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.core.errors import SpecError
from tasks.core.ops import OPS
from tasks.core.spec import DatasetSpec, DerivedFeature, memo, polars_dtype, typed_categories
from tasks.core.task.kinds import task_of


def derived_expr(d: DerivedFeature) -> pl.Expr:
    """The expression of one derived feature; an op that is not in `OPS` is an error."""
    op = OPS.get(d.op)
    if op is None or len(d.inputs) != op.arity:
        raise SpecError(
            f"derived feature {d.name!r}: op {d.op!r} with {len(d.inputs)} input(s) is not one of {sorted(OPS)}"
        )
    return op.expr(*(pl.col(c).cast(pl.Float64) for c in d.inputs)).alias(d.name)


@dataclass(frozen=True)
class _Plan:
    """Polars expressions compiled once per spec (building them costs more than running them
    on a few rows, which matters when serving one record at a time)."""

    derived: list[pl.Expr]
    encode: list[pl.Expr]
    encode_coded: list[pl.Expr]  # `encode` over a frame whose categories are already their `category_enum`


def _plan(spec: DatasetSpec) -> _Plan:
    def build() -> _Plan:
        derived = [derived_expr(d) for d in spec.derived_features]
        encode, encode_coded = [], []
        for name in spec.base_features:
            expr = coded = pl.col(name)
            if name in spec.categorical_features:
                expr = expr.cast(pl.String).cast(category_enum(spec, name)).to_physical()
                coded = coded.to_physical()
            encode.append(expr.cast(pl.Float64).alias(name))
            encode_coded.append(coded.cast(pl.Float64).alias(name))
        # derived features are computed from the base columns in the same select: one pass
        encode += [expr.cast(pl.Float64) for expr in derived]
        encode_coded += [expr.cast(pl.Float64) for expr in derived]
        return _Plan(derived=derived, encode=encode, encode_coded=encode_coded)

    return memo(spec, "feature_plan", build)


def add_features(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Append the spec's derived features to a typed frame (a new frame; the input is untouched)."""
    if not spec.derived_features:
        return frame
    return frame.with_columns(_plan(spec).derived)


def category_enum(spec: DatasetSpec, column: str) -> pl.Enum:
    """The fixed category order of a column: its codes mean the same in training and serving."""
    return pl.Enum([str(c) for c in spec.columns[column].categories or []])


def encode_features(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Model-ready numeric frame in `spec.feature_names` order.

    Categories become their code in the spec's category list (null stays null);
    numbers and booleans become Float64; derived features are computed from the base
    columns. Input needs the base feature columns (other columns are ignored).
    """
    return frame.select(_plan(spec).encode)


def encode_exprs(spec: DatasetSpec, coded: bool = False) -> list[pl.Expr]:
    """`encode_features` as expressions over the typed base columns (for callers that fuse passes);
    `coded`: over columns where the categories are already their `category_enum`."""
    return _plan(spec).encode_coded if coded else _plan(spec).encode


def feature_matrix(frame: pl.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """`encode_features` as a float64 matrix with NaN for missing values."""
    return encode_features(frame, spec).to_numpy().astype(np.float64, copy=False)


def encode_target(frame: pl.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """The frame's targets as the task encodes them (binary: 1 for the positive label, 0 otherwise;
    regression: the values)."""
    return task_of(spec).encode(frame.get_column(spec.target.column))


def row_encoder(spec: DatasetSpec) -> Callable[[Mapping[str, object]], list[float]]:
    """One validated record (typed values as the request model gives them, None for null) → its
    feature vector in `spec.feature_names` order, NaN for missing: equal to that record's row of
    `feature_matrix`, with no frame built."""

    def build():
        base = []
        for name in spec.base_features:
            col = spec.columns[name]
            if name in spec.categorical_features:
                values = typed_categories(col)
                column = pl.DataFrame({name: values}, schema={name: polars_dtype(col.type)})
                codes = dict(zip(values, encode_features_of(column, spec, name), strict=True))
                base.append((name, codes))
            else:
                base.append((name, None))
        derived = [(OPS[d.op].row, tuple(d.inputs)) for d in spec.derived_features]
        nan = math.nan

        def encode(record: Mapping[str, object]) -> list[float]:
            out = []
            for name, codes in base:
                value = record.get(name)
                if value is None:
                    out.append(nan)
                elif codes is not None:
                    out.append(codes.get(value, nan))
                else:
                    out.append(float(value))
            for rule, inputs in derived:
                args = [record.get(c) for c in inputs]
                result = None if any(a is None for a in args) else rule(*(float(a) for a in args))
                out.append(nan if result is None else result)
            return out

        return encode

    return memo(spec, "row_encoder", build)


def encode_features_of(column: pl.DataFrame, spec: DatasetSpec, name: str) -> list[float]:
    """One base feature column encoded by the Polars path (the source of the row encoder's codes)."""
    expr = next(e for e in _plan(spec).encode if e.meta.output_name() == name)
    return column.select(expr).to_series().to_list()
