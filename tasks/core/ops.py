"""The derived-feature ops: row-wise Polars expressions over numeric inputs (no fitted state).

A new op is one entry here; the config accepts it and training and serving compute it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import polars as pl


class Op(NamedTuple):
    arity: int
    expr: Callable[..., pl.Expr]  # the inputs, cast to Float64 → the feature


OPS: dict[str, Op] = {
    "ratio": Op(2, lambda num, den: pl.when(den != 0).then(num / den).otherwise(None)),
    "difference": Op(2, lambda a, b: a - b),
    "product": Op(2, lambda a, b: a * b),
    "log1p": Op(1, lambda a: pl.when(a > -1).then(a.log1p()).otherwise(None)),
}
