"""Simulated production for demos, tests and benchmarks: labelled rows drawn from the dataset's
own table, as they are (no drift) or reweighted and shifted (drift) — written as batch files, or
sent as live traffic to a served endpoint whose true labels are posted to `/feedback` later.

Drift is made by *resampling real rows* — more of some category, more low values of a
column — so labels stay true to their rows, plus an optional multiplicative shift of
numeric columns (e.g. higher charges). Everything is read off the dataset config:

    python -m tasks.simulate --config configs/default.yaml --out batches/ \\
        --favour COLUMN=CATEGORY --favour-low NUMERIC_COLUMN --scale NUMERIC_COLUMN=1.3
    python -m tasks.simulate --config configs/default.yaml --traffic http://127.0.0.1:3000 \\
        --rows 1000 --drifted --label-delay 5
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date, datetime
from pathlib import Path

import httpx
import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.cast import clean
from tasks.core.prepare import split_quarantine
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec, load_spec
from tasks.core.task.kinds import task_of
from tasks.stores.keepalive import stable_client
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


# -- live traffic ------------------------------------------------------------------------------
def request_records(rows: pl.DataFrame, spec: DatasetSpec) -> list[dict]:
    """Rows as `/predict` takes them: the config's columns (and id), JSON values."""
    fields = [c for c in (spec.id_column, *spec.columns) if c and c in rows.columns]
    out = rows.select(fields).to_dicts()
    for record in out:
        for key, value in record.items():
            if isinstance(value, datetime | date):
                record[key] = value.isoformat()
    return out


def with_fresh_ids(rows: pl.DataFrame, spec: DatasetSpec, prefix: str) -> pl.DataFrame:
    """Drawn rows repeat; each simulated customer gets an id of its own (when the table has ids)."""
    if not spec.id_column:
        return rows
    return rows.with_columns(pl.format(f"{prefix}-{{}}", pl.int_range(pl.len())).alias(spec.id_column))


def endpoint_client(url: str) -> httpx.Client:
    """A client of the endpoint, with its keep-alive policy (a request a roll-out's reload cut off
    unanswered is sent once more); a locked one (the serving target's `api_key`) gets the key from
    LIFECYCLE_API_KEY in this process's environment (not argv: `ps` shows argv to everyone)."""
    key = os.environ.get("LIFECYCLE_API_KEY")
    return stable_client(url, timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {})


def send_traffic(url: str, rows: pl.DataFrame, spec: DatasetSpec, batch_size: int = 50) -> pl.DataFrame:
    """POST the rows to `/predict` in requests of `batch_size`; what was answered: prediction id,
    id (if any), the task's score (probability, predicted value) and the row's true target as typed
    (a label, a number: kept here, posted later)."""
    score = task_of(spec).score_column
    answered = []
    with endpoint_client(url) as client:
        for chunk in rows.iter_slices(batch_size):
            response = client.post("/predict", json={"records": request_records(chunk, spec)})
            response.raise_for_status()
            predictions = response.json()["predictions"]
            answered.append(
                pl.DataFrame(
                    {
                        "prediction_id": [p["prediction_id"] for p in predictions],
                        score: [p[score] for p in predictions],
                        "model_version": [p["model_version"] for p in predictions],
                        "truth": chunk.get_column(spec.target.column),
                    }
                ).with_columns([chunk.get_column(spec.id_column).cast(pl.String)] if spec.id_column else [])
            )
    return pl.concat(answered) if answered else pl.DataFrame()


def post_labels(
    url: str, answered: pl.DataFrame, spec: DatasetSpec, by: str = "prediction_id", share: float = 1.0, seed: int = 0
) -> int:
    """The truth for a share of the answered rows, to `/feedback`, keyed by prediction id or the id column."""
    key = spec.id_column if by == "id" else "prediction_id"
    if key is None:
        raise ValueError(f"{spec.name} has no id column: post labels by prediction_id")
    chosen = answered.sample(fraction=share, seed=seed) if share < 1 else answered
    stored = 0
    with endpoint_client(url) as client:
        for chunk in chosen.iter_slices(500):
            labels = [{key: k, "label": y} for k, y in zip(chunk[key], chunk["truth"], strict=True)]
            response = client.post("/feedback", json={"labels": labels})
            response.raise_for_status()
            stored += response.json()["stored"]
    return stored


def run_traffic(
    url: str, spec: DatasetSpec, rows: int, seed: int, drifted: bool, recipe: DriftRecipe | None, **labels
) -> dict:
    """Like (or drifted) traffic at `url`, then its labels after `label_delay` seconds."""
    table = valid_rows(spec)
    drawn = drifted_batch(table, spec, rows, seed, recipe or DriftRecipe.default(spec)) if drifted else None
    drawn = with_fresh_ids(drawn if drawn is not None else sample_batch(table, rows, seed), spec, f"sim{seed}")
    started = time.time()
    answered = send_traffic(url, drawn, spec, labels.pop("batch_size", 50))
    time.sleep(labels.pop("label_delay", 0.0))
    stored = post_labels(url, answered, spec, seed=seed, **labels)
    return {"sent": drawn.height, "answered": answered.height, "labels_stored": stored, "started": started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", type=Path, help="folder for same.csv and drifted.csv")
    parser.add_argument("--traffic", metavar="URL", help="send live traffic to this endpoint instead")
    parser.add_argument("--drifted", action="store_true", help="traffic: drifted rows (default: like the table)")
    parser.add_argument("--label-delay", type=float, default=0.0, help="traffic: seconds before labels are posted")
    parser.add_argument("--label-share", type=float, default=1.0, help="traffic: share of answered rows labelled")
    parser.add_argument("--label-by", choices=["prediction_id", "id"], default="prediction_id")
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
    if args.traffic:
        summary = run_traffic(
            args.traffic, spec, args.rows, args.seed, args.drifted, recipe,
            label_delay=args.label_delay, share=args.label_share, by=args.label_by,
        )  # fmt: skip
        print(json.dumps(summary))
        return
    if args.out is None:
        parser.error("give --out (batch files) or --traffic (live requests)")
    for kind, path in write_batches(spec, args.out, args.rows, args.seed, recipe).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
