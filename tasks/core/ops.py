"""The derived-feature ops over numeric inputs (no fitted state), each twice: a Polars expression
(tables: training, bulk scoring) and the same rule on one row's Python floats (single-record serving).
`tests/unit/test_rowwise.py` proves the two equal for every op, on nulls and edge values.

A new op is one entry here; the config accepts it and training and serving compute it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import polars as pl


class Op(NamedTuple):
    arity: int
    expr: Callable[..., pl.Expr]  # the inputs, cast to Float64 → the feature
    row: Callable[..., float | None]  # the inputs as floats (never None: a null input gives null) → the feature


OPS: dict[str, Op] = {
    "ratio": Op(
        2,
        lambda num, den: pl.when(den != 0).then(num / den).otherwise(None),
        lambda num, den: num / den if den else None,
    ),
    "difference": Op(2, lambda a, b: a - b, lambda a, b: a - b),
    "product": Op(2, lambda a, b: a * b, lambda a, b: a * b),
    "log1p": Op(
        1, lambda a: pl.when(a > -1).then(a.log1p()).otherwise(None), lambda a: math.log1p(a) if a > -1 else None
    ),
}
