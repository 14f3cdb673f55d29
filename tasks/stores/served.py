"""What was served and what the truth turned out to be, on disk: the prediction log the bento writes
(`<workdir>/predictions/<dataset>/date=…/part-*.parquet`) and the label store beside it
(`<workdir>/labels/<dataset>/…`, same layout). Files appear whole (written, then renamed). Every
reader first rolls what dead serving workers left in the log's segments (`tasks.core.logs`) into parts;
a live worker rolls its own every couple of seconds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from tasks.core.feedback import LABEL_SCHEMA, PREDICTION_ID, ServedWindow, join_labels, window_bounds, window_rows
from tasks.core.logs import as_text, roll_leftovers, write_part
from tasks.core.spec import DatasetSpec
from tasks.core.task.kinds import task_of
from tasks.stores.workdir import Workdir

logger = logging.getLogger(__name__)


def parts(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob("*.parquet")) if Path(folder).is_dir() else []


def roll_dead_segments(folder: Path) -> None:
    """Roll the segments of a log folder's dead writers into parts, so a reader sees every row they
    answered. A reader that may not write there (or a full disk) reads the parts there are."""
    try:
        roll_leftovers(folder)
    except OSError as exc:
        logger.warning("could not roll the leftover segments of %s: %s", folder, exc)


def scan_parts(folder: Path, modified_since: float | None = None) -> pl.LazyFrame | None:
    """Every part file of a log folder (or those written since an epoch time) as one lazy frame
    (older parts may lack newer columns), dead writers' segments rolled first."""
    roll_dead_segments(folder)
    files = [f for f in parts(folder) if modified_since is None or f.stat().st_mtime >= modified_since]
    if not files:
        return None
    return pl.concat([as_text(pl.scan_parquet(f, hive_partitioning=False)) for f in files], how="diagonal_relaxed")


def read_log(folder: Path) -> pl.DataFrame:
    scan = scan_parts(folder)
    return pl.DataFrame() if scan is None else scan.collect()


def read_window(log_folder: Path, window: ServedWindow) -> pl.DataFrame:
    """The window's rows of the prediction log (one model version, logged inside [start, end])."""
    scan = scan_parts(log_folder)
    if scan is None:
        return pl.DataFrame()
    columns = scan.collect_schema().names()
    if "model_version" not in columns or "logged_at" not in columns:
        return pl.DataFrame()
    return window_rows(scan, window).collect()


def logged_stamps(log_folder: Path, model_version: str) -> pl.Series:
    """When each of a version's rows was logged (epoch seconds): what a row-count window is cut from."""
    scan = scan_parts(log_folder)
    if scan is None:
        return pl.Series("logged_at", [], dtype=pl.Float64)
    return scan.filter(pl.col("model_version") == model_version).select("logged_at").collect().to_series()


def window_ending_now(log_folder: Path, model_version: str, window: str) -> ServedWindow:
    """A version's served window (a duration, or its last N logged rows) ending now."""
    start, end = window_bounds(window, logged_stamps(log_folder, model_version), datetime.now(UTC))
    return ServedWindow(model_version=model_version, start=start, end=end)


def scored_since(log_folder: Path, spec: DatasetSpec, model_version: str, since: float) -> pl.DataFrame:
    """A version's rows logged at or after `since` (epoch seconds): request id, time, and what it
    answered (the task's score column and the answer columns: every logged column but the inputs).
    Only part files written since then are read."""
    scan = scan_parts(log_folder, modified_since=since)
    if scan is None:
        return pl.DataFrame(schema={"request_id": pl.String, "logged_at": pl.Float64,
                                    task_of(spec).score_column: pl.Float64})  # fmt: skip
    keep = (pl.col("model_version") == model_version) & (pl.col("logged_at") >= since)
    inputs = set(spec.input_columns)
    answered = [c for c in scan.collect_schema().names() if c not in inputs]
    return scan.filter(keep).select(answered).collect()


def logged_keys(log_folder: Path, id_column: str | None) -> pl.DataFrame:
    """The join keys of every logged row, all versions: what a label can match."""
    scan = scan_parts(log_folder)
    if scan is None:
        return pl.DataFrame()
    present = scan.collect_schema().names()
    return scan.select([c for c in (PREDICTION_ID, id_column) if c and c in present]).collect()


def read_labels(label_folder: Path) -> pl.DataFrame:
    scan = scan_parts(label_folder)
    if scan is None:
        return pl.DataFrame(schema=LABEL_SCHEMA)
    return scan.select(pl.col(name).cast(dtype) for name, dtype in LABEL_SCHEMA.items()).collect()


def append_labels(label_folder: Path, labels: pl.DataFrame) -> Path | None:
    """Add labels to the store as one new part file (the layout the service's `/feedback` writes)."""
    if labels.is_empty():
        return None
    return write_part(label_folder, labels.select(list(LABEL_SCHEMA)).cast(LABEL_SCHEMA))


def labelled_window(workdir: Workdir, spec: DatasetSpec, window: ServedWindow) -> pl.DataFrame:
    """The window's served rows, with the target column set where the truth has arrived."""
    served = read_window(workdir.prediction_log(spec.name), window)
    if served.is_empty():
        return served
    return join_labels(served, read_labels(workdir.labels(spec.name)), spec)
