"""Feature transforms in pure Polars — the one copy used by training and serving.

Every transform is row-wise and driven by the `DatasetSpec`: no fitted state, so
the same function gives the same features for a training table and for one
request record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.core.errors import SpecError
from tasks.core.ops import OPS
from tasks.core.spec import DatasetSpec, DerivedFeature, memo


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


def _plan(spec: DatasetSpec) -> _Plan:
    def build() -> _Plan:
        derived = [derived_expr(d) for d in spec.derived_features]
        encode = []
        for name in spec.base_features:
            expr = pl.col(name)
            if name in spec.categorical_features:
                expr = expr.cast(pl.String).cast(category_enum(spec, name)).to_physical()
            encode.append(expr.cast(pl.Float64).alias(name))
        # derived features are computed from the base columns in the same select: one pass
        encode += [expr.cast(pl.Float64) for expr in derived]
        return _Plan(derived=derived, encode=encode)

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


def feature_matrix(frame: pl.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """`encode_features` as a float64 matrix with NaN for missing values."""
    return encode_features(frame, spec).to_numpy().astype(np.float64, copy=False)


def encode_target(frame: pl.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """1 for the positive label, 0 otherwise."""
    return (frame.get_column(spec.target.column) == spec.target.positive).cast(pl.Int8).to_numpy()
