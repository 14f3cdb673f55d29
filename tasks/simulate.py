"""Simulated production batches for demos and tests: labelled rows drawn from the dataset's
own table, as they are (no drift) or reweighted and shifted (drift).

Drift is made by *resampling real rows* — more of some category, more low values of a
column — so labels stay true to their rows, plus an optional multiplicative shift of
numeric columns (e.g. higher charges). Everything is read off the dataset config:

    python -m tasks.simulate --config configs/default.yaml --out batches/ \\
        --favour COLUMN=CATEGORY --favour-low NUMERIC_COLUMN --scale NUMERIC_COLUMN=1.3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.cast import clean
from tasks.core.prepare import split_quarantine
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec, load_spec
from tasks.stores.snapshots import read_source


class DriftRecipe(BaseModel):
    favour: dict[str, str] = {}  # category column → value drawn `weight` times as often
    favour_low: list[str] = []  # numeric columns whose low values are drawn more often
    scale: dict[str, float] = {}  # numeric column → factor (clipped to the column's max)
    weight: float = 5.0

    @classmethod
    def default(cls, spec: DatasetSpec) -> DriftRecipe:
        """A shift any config allows: its slice categories, its first ranged int and float."""
        categories = spec.evaluation.slices or spec.categorical_features[:1]
        ranged = [n for n in spec.base_features if spec.columns[n].max is not None and not spec.columns[n].categories]
        ints = [n for n in ranged if spec.columns[n].type == "int"]
        floats = [n for n in ranged if spec.columns[n].type == "float"]
        return cls(
            favour={c: str(spec.columns[c].categories[0]) for c in categories},
            favour_low=ints[:1],
            scale={floats[0]: 1.3} if floats else {},
        )


def valid_rows(spec: DatasetSpec) -> pl.DataFrame:
    """The dataset's rows that pass its own validation, typed."""

    raw = read_source(spec)
    kept, _ = split_quarantine(raw, find_failures(raw, spec))
    return clean(kept, spec)


def sample_batch(rows: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A uniform sample: the same distribution as the table (no drift)."""
    return rows.sample(n, with_replacement=n > rows.height, seed=seed)


def drifted_batch(rows: pl.DataFrame, spec: DatasetSpec, n: int, seed: int, recipe: DriftRecipe) -> pl.DataFrame:
    weights = np.ones(rows.height)
    for column, value in recipe.favour.items():
        weights *= np.where(rows.get_column(column).cast(pl.String).to_numpy() == value, recipe.weight, 1.0)
    for column in recipe.favour_low:
        rank = rows.get_column(column).rank("average").fill_null(rows.height / 2).to_numpy() / rows.height
        weights *= np.exp(-np.log(recipe.weight) * rank)
    rng = np.random.default_rng(seed)
    picked = rows[rng.choice(rows.height, size=n, replace=True, p=weights / weights.sum()).tolist()]
    shifts = []
    for column, factor in recipe.scale.items():
        col = spec.columns[column]
        shifted = pl.col(column) * factor
        if col.max is not None:
            shifted = pl.min_horizontal(shifted, pl.lit(col.max))
        shifts.append(shifted.round(2).cast(pl.Int64 if col.type == "int" else pl.Float64).alias(column))
    return picked.with_columns(shifts) if shifts else picked


def write_batches(spec: DatasetSpec, out: Path, rows: int, seed: int, recipe: DriftRecipe) -> dict[str, Path]:
    """`same.csv` (no drift) and `drifted.csv`, labelled, in the source's column layout."""
    table = valid_rows(spec)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"same": out / "same.csv", "drifted": out / "drifted.csv"}
    sample_batch(table, rows, seed).write_csv(paths["same"])
    drifted_batch(table, spec, rows, seed + 1, recipe).write_csv(paths["drifted"])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="folder for same.csv and drifted.csv")
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--favour", action="append", default=[], metavar="COLUMN=VALUE")
    parser.add_argument("--favour-low", action="append", default=[], metavar="COLUMN")
    parser.add_argument("--scale", action="append", default=[], metavar="COLUMN=FACTOR")
    args = parser.parse_args(argv)
    spec = load_spec(args.config)
    if args.favour or args.favour_low or args.scale:
        recipe = DriftRecipe(
            favour=dict(item.split("=", 1) for item in args.favour),
            favour_low=args.favour_low,
            scale={k: float(v) for k, v in (item.split("=", 1) for item in args.scale)},
        )
    else:
        recipe = DriftRecipe.default(spec)
    for kind, path in write_batches(spec, args.out, args.rows, args.seed, recipe).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
