"""The data phase's pure rules: which rows are quarantined and why, the tolerance, the split."""

from __future__ import annotations

import hashlib

import polars as pl
from pydantic import BaseModel

from tasks.core.errors import QuarantineToleranceExceeded
from tasks.core.spec import DatasetSpec

SPLITS = ("train", "validation", "test")
SPLIT_COLUMN = "_split"
_CHUNK_ROWS = 200_000


class RowCounts(BaseModel):
    rows_in: int
    rows_kept: int
    rows_quarantined: int
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
    reason = pl.format("{}: {} (value={})", "column", "check", pl.col("value").fill_null("null"))
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


def split_quarantine(raw: pl.DataFrame, failures: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows, quarantined rows with reasons); together they are exactly the input rows."""
    indexed = raw.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
    reasons = reasons_by_row(failures).rename({"row": "source_row"})
    kept = indexed.join(reasons, on="source_row", how="anti").drop("source_row")
    quarantined = reasons.join(
        indexed.with_columns(pl.all().exclude("source_row").cast(pl.String)), on="source_row", how="left"
    ).sort("source_row")
    if kept.height + quarantined.height != raw.height:
        raise AssertionError(f"rows lost: {raw.height} in, {kept.height} kept, {quarantined.height} quarantined")
    return kept, quarantined


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


def assign_splits(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Add the split column: stratified on the target (seeded), or by event time (latest rows last)."""
    val, test = spec.split.validation, spec.split.test
    if spec.split.strategy == "time":
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
    target = spec.target.column
    rank = pl.int_range(pl.len()).shuffle(seed=spec.split.seed).over(target)
    return frame.with_columns(split_by_position(rank / pl.len().over(target), spec))


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
