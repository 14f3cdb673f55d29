"""The served bento's logs. Append-only prediction log: buffered in memory, flushed to Parquet off the request path.

Files land in `<root>/<dataset>/date=YYYY-MM-DD/part-<time>-<pid>-<random>.parquet`; the
monitoring phase reads them all with one glob. Sensitive columns never reach this module.
A request only appends Python objects to a list; frames are built by the flusher thread.
Columns with few distinct values (categories, labels, versions, the request id) are written as
Parquet dictionaries from their Enum/Categorical codes (half the write time of text); every reader
goes through `as_text`, so a log reads as text whatever wrote it.
Labels sent to `/feedback` land in the label store beside it, one part file per request.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl


def log_root(environ=os.environ) -> Path:
    """Where the log goes: LIFECYCLE_PREDICTION_LOG_DIR (default `artifacts/predictions`, the default
    workdir's). A relative path is taken from the folder `bentoml serve` was started in ($PWD), not
    from the bento's folder in the BentoML store, where the workers run."""
    return _from_serving_dir(environ.get("LIFECYCLE_PREDICTION_LOG_DIR", "artifacts/predictions"), environ)


def label_root(environ=os.environ) -> Path:
    """Where `/feedback` stores labels: LIFECYCLE_LABEL_DIR, else `labels` beside the prediction log's
    root (the workdir's `labels/`, where `flows.labels` writes and the monitor reads)."""
    if environ.get("LIFECYCLE_LABEL_DIR"):
        return _from_serving_dir(environ["LIFECYCLE_LABEL_DIR"], environ)
    return log_root(environ).parent / "labels"


def _from_serving_dir(folder: str, environ) -> Path:
    root = Path(folder)
    return root if root.is_absolute() else Path(environ.get("PWD", os.getcwd())) / root


# Served data is written while requests wait for the CPU: zstd level 1 is ~2x faster than the default
# level 3 on prediction ids and probabilities, for files ~5% bigger.
SERVED_PARQUET = {"compression": "zstd", "compression_level": 1}


def as_text(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """Enum and Categorical columns as their text: how the log reads, whatever wrote a part."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    coded = [name for name, dtype in schema.items() if isinstance(dtype, pl.Enum | pl.Categorical)]
    return frame.with_columns(pl.col(coded).cast(pl.String)) if coded else frame


def text_schema(schema: dict) -> dict:
    return {name: pl.String if isinstance(d, pl.Enum | pl.Categorical) else d for name, d in schema.items()}


def _conform(frame: pl.DataFrame, schema: dict) -> pl.DataFrame:
    """`frame` with `schema`'s columns in its order and types (null where it has no such column)."""
    return frame.select(
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in schema.items()
    )


def write_part(folder: Path, frame: pl.DataFrame) -> Path:
    """One whole part file under `folder/date=…/` (written aside, then renamed into place)."""
    now = datetime.now(UTC)
    day = Path(folder) / f"date={now:%Y-%m-%d}"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"part-{now:%H%M%S%f}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, **SERVED_PARQUET)
    tmp.replace(path)
    return path


class PredictionLog:
    def __init__(self, root: Path, dataset: str, schema: dict, flush_rows: int = 5000, flush_seconds: float = 2.0):
        self.folder = Path(root) / dataset
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._rows: list[dict] = []
        self._frames: list[pl.DataFrame] = []
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append_rows(self, rows: list[dict]) -> None:
        """Queue logged rows (dicts with the schema's keys); never waits for disk."""
        with self._lock:
            self._rows.extend(rows)
            self._count += len(rows)
            full = self._count >= self.flush_rows
        if full:
            self._wake()

    def append_frame(self, frame: pl.DataFrame) -> None:
        with self._lock:
            self._frames.append(frame)
            self._count += frame.height
            full = self._count >= self.flush_rows
        if full:
            self._wake()

    def _wake(self) -> None:
        threading.Thread(target=self.flush, daemon=True).start()

    def flush(self) -> Path | None:
        with self._lock:
            rows, frames = self._rows, self._frames
            self._rows, self._frames, self._count = [], [], 0
        if rows:  # as text, then cast strictly (a frame built with an Enum schema nulls what is not in it)
            frames = [pl.DataFrame(rows, schema=text_schema(self.schema), orient="row"), *frames]
        if not frames:
            return None
        return write_part(self.folder, self._batch(frames))

    def _batch(self, frames: list[pl.DataFrame]) -> pl.DataFrame:
        """The frames in the log's schema; as text if a value is not in its column's Enum."""
        try:
            return pl.concat([f if f.schema == self.schema else _conform(f, self.schema) for f in frames])
        except pl.exceptions.InvalidOperationError:
            return pl.concat([_conform(as_text(f), text_schema(self.schema)) for f in frames])

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
