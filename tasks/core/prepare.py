"""The data phase's pure rules: which rows are quarantined or dropped and why, the tolerance, what a
model needs of the kept rows, the split."""

from __future__ import annotations

import hashlib

import polars as pl
from pydantic import BaseModel

from tasks.core.cast import FAILURE_SCHEMA
from tasks.core.errors import DataError, QuarantineToleranceExceeded
from tasks.core.spec import DatasetSpec, column_kinds, polars_dtype
from tasks.core.task.kinds import task_of

SPLITS = ("train", "validation", "test")
SPLIT_COLUMN = "_split"
_CHUNK_ROWS = 200_000
# an exact copy of an earlier row, as a failure: its reason reads "duplicate of row N"
DUPLICATE_COLUMN, DUPLICATE_CHECK = "(all columns)", "duplicate"
DUPLICATES_SCHEMA = {"row": pl.Int64, "first_row": pl.Int64}
_ROW = "__row__"


class RowCounts(BaseModel):
    rows_in: int  # = rows_kept + rows_quarantined + rows_dropped
    rows_kept: int
    rows_quarantined: int
    rows_dropped: int = 0  # exact duplicates, under `quarantine.duplicates: drop`
    train: int = 0
    validation: int = 0
    test: int = 0


class FailingCheck(BaseModel):
    column: str
    check: str
    rows: int
    example: str | None


class QuarantineReport(BaseModel):
    path: str
    rows_in: int
    rows_quarantined: int
    rows_dropped: int = 0
    max_fraction: float
    top_checks: list[FailingCheck]

    @property
    def fraction(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


def frame_digest(frame: pl.DataFrame) -> str:
    """sha256 of a frame's CSV text, chunk by chunk: stable across library versions."""
    digest = hashlib.sha256(",".join(frame.columns).encode())
    for offset in range(0, frame.height, _CHUNK_ROWS):
        digest.update(frame.slice(offset, _CHUNK_ROWS).write_csv(include_header=False).encode())
    return digest.hexdigest()


def reasons_by_row(failures: pl.DataFrame) -> pl.DataFrame:
    """One row per failing input row: its first reason, and all of them."""
    duplicate = (pl.col("column") == DUPLICATE_COLUMN) & (pl.col("check") == DUPLICATE_CHECK)
    reason = (
        pl.when(duplicate)
        .then(pl.format("duplicate of {}", "value"))
        .otherwise(pl.format("{}: {} (value={})", "column", "check", pl.col("value").fill_null("null")))
    )
    return (
        failures.with_columns(reason.alias("reason"))
        .group_by("row", maintain_order=True)
        .agg(
            pl.col("reason").first(),
            pl.col("column").first().alias("failed_column"),
            pl.col("check").first().alias("failed_check"),
            pl.col("value").first().alias("failed_value"),
            pl.col("reason").alias("all_reasons"),
        )
    )


def split_quarantine(
    raw: pl.DataFrame, failures: pl.DataFrame, dropped: pl.Series | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows, quarantined rows with reasons); with the `dropped` rows (their row numbers; see
    `duplicates_policy`) they are exactly the input rows."""
    indexed = raw.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
    gone = 0
    if dropped is not None and dropped.len():
        remaining = indexed.filter(~pl.col("source_row").is_in(dropped.implode()))
        indexed, gone = remaining, indexed.height - remaining.height
    reasons = reasons_by_row(failures).rename({"row": "source_row"})
    reasons = reasons.join(indexed.select("source_row"), on="source_row", how="semi")
    kept = indexed.join(reasons, on="source_row", how="anti").drop("source_row")
    quarantined = reasons.join(
        indexed.with_columns(pl.all().exclude("source_row").cast(pl.String)), on="source_row", how="left"
    ).sort("source_row")
    if kept.height + quarantined.height + gone != raw.height:
        raise AssertionError(
            f"rows lost: {raw.height} in, {kept.height} kept, {quarantined.height} quarantined, {gone} dropped"
        )
    return kept, quarantined


def find_duplicates(raw: pl.DataFrame) -> pl.DataFrame:
    """Every exact copy of an earlier row (all columns equal as read; two nulls are equal): its `row`
    and `first_row`, the row of its first copy (0-based, as the quarantine's `source_row`)."""
    first = pl.col(_ROW).min().over(raw.columns)
    return (
        raw.with_row_index(_ROW)
        .select(pl.col(_ROW).alias("row"), first.alias("first_row"))
        .filter(pl.col("row") != pl.col("first_row"))
        .cast(DUPLICATES_SCHEMA)
    )


def duplicates_policy(
    failures: pl.DataFrame, duplicates: pl.DataFrame, spec: DatasetSpec
) -> tuple[pl.DataFrame, pl.Series]:
    """(failures, rows dropped) under `quarantine.duplicates`: a copy is a failure of its own
    ("duplicate of row N", before its other reasons), dropped, or kept (the split keeps copies together)."""
    rows = duplicates.get_column("row")
    none = pl.Series("row", [], pl.Int64)
    match spec.quarantine.duplicates:
        case "quarantine":
            copies = duplicates.select(
                "row",
                pl.lit(DUPLICATE_COLUMN).alias("column"),
                pl.lit(DUPLICATE_CHECK).alias("check"),
                pl.format("row {}", "first_row").alias("value"),
            ).cast(FAILURE_SCHEMA)
            return pl.concat([copies, failures.cast(FAILURE_SCHEMA)]).sort("row", maintain_order=True), none
        case "drop":
            return failures.filter(~pl.col("row").is_in(rows.implode())), rows
        case "keep":
            return failures, none
    raise ValueError(f"unknown duplicates policy {spec.quarantine.duplicates!r}")


def top_failing_checks(failures: pl.DataFrame, limit: int = 10) -> list[FailingCheck]:
    top = (
        failures.group_by("column", "check")
        .agg(pl.col("row").n_unique().alias("rows"), pl.col("value").first().alias("example"))
        .sort(["rows", "column", "check"], descending=[True, False, False])
        .head(limit)
    )
    return [FailingCheck(**r) for r in top.iter_rows(named=True)]


def check_tolerance(report: QuarantineReport) -> None:
    """Fail when the share of quarantined rows is above the config's tolerance."""
    if report.fraction <= report.max_fraction:
        return
    top = "; ".join(f"{c.column} {c.check}: {c.rows} rows (e.g. {c.example!r})" for c in report.top_checks[:5])
    raise QuarantineToleranceExceeded(
        f"{report.rows_quarantined} of {report.rows_in} rows ({report.fraction:.1%}) failed validation, "
        f"more than the tolerated {report.max_fraction:.1%}. Top failing checks: {top}. "
        f"Quarantined rows and reasons: {report.path}"
    )


def check_trainable(source: str, spec: DatasetSpec, counts: pl.DataFrame, varied: bool) -> None:
    """A model needs kept rows whose targets it can learn from (the task judges: every label, more
    than one value) and rows that differ: otherwise the run fails here, naming the source, not
    later inside LightGBM or Optuna. `counts`: the kept targets (`target_counts`)."""
    rows = int(counts.get_column("count").sum())
    if not rows:
        raise DataError(f"{source}: no rows kept after quarantine: nothing to train on")
    why = task_of(spec).untrainable(counts)
    if why:
        raise DataError(f"{source}: {why}")
    if not varied:
        raise DataError(f"{source}: all {rows} kept rows have the same feature values: one distinct row")


def target_counts(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Kept rows per distinct target value (of a cleaned frame): the target column and `count`."""
    return frame.get_column(spec.target.column).value_counts().cast({"count": pl.Int64})


def merged_counts(parts: list[pl.DataFrame], spec: DatasetSpec) -> pl.DataFrame:
    """`target_counts` of slices, as one table's (a value seen in several slices counted once)."""
    target = spec.target.column
    if not parts:
        return pl.DataFrame(schema={target: polars_dtype(column_kinds(spec)[target]), "count": pl.Int64})
    return pl.concat(parts).group_by(target, maintain_order=True).agg(pl.col("count").sum())


def features_vary(frame: pl.DataFrame, spec: DatasetSpec) -> bool:
    """True when some row's base features differ from the first row's (one cheap pass)."""
    read = dict.fromkeys([*spec.base_features, *(i for d in spec.derived_features for i in d.inputs)])
    if frame.height < 2:
        return False
    differs = [pl.col(c).ne_missing(pl.col(c).first()) for c in read]
    return bool(frame.select(pl.any_horizontal(*differs).any()).item())


def assign_splits(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Add the split column: stratified (seeded, within each of the task's strata: a label, a
    quantile bin of the target), random (seeded), or by event time (latest rows last).
    Identical rows all take the split of their first copy (see `copies_together`)."""
    return copies_together(_positional_splits(frame, spec))


def copies_together(split: pl.DataFrame) -> pl.DataFrame:
    """Every copy of a row (all columns equal) in the split of its first copy, so no row is on both
    sides; a table without copies keeps its split as it is."""
    columns = [c for c in split.columns if c != SPLIT_COLUMN]
    return split.with_columns(pl.col(SPLIT_COLUMN).first().over(columns))


def _positional_splits(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    val, test = spec.split.validation, spec.split.test
    shuffled = pl.int_range(pl.len()).shuffle(seed=spec.split.seed)
    match spec.split.strategy:
        case "time":
            ordered = frame.sort(spec.event_time_column, maintain_order=True)
            position = pl.int_range(pl.len()) / pl.len()
            label = (
                pl.when(position >= 1 - test)
                .then(pl.lit("test"))
                .when(position >= 1 - test - val)
                .then(pl.lit("validation"))
                .otherwise(pl.lit("train"))
            )
            return ordered.with_columns(label.alias(SPLIT_COLUMN))
        case "stratified":
            strata = task_of(spec).strata(pl.col(spec.target.column))
            return frame.with_columns(split_by_position(shuffled.over(strata) / pl.len().over(strata), spec))
        case "random":
            return frame.with_columns(split_by_position(shuffled / pl.len(), spec))
    raise ValueError(f"unknown split strategy {spec.split.strategy!r}")


def split_by_position(position: pl.Expr, spec: DatasetSpec) -> pl.Expr:
    """The split column from a position in [0, 1): the first `test` share is test, then validation."""
    test, val = spec.split.test, spec.split.validation
    label = (
        pl.when(position < test)
        .then(pl.lit("test"))
        .when(position < test + val)
        .then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )
    return label.alias(SPLIT_COLUMN)
