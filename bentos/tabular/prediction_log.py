"""Append-only prediction log: buffered in memory, flushed to Parquet off the request path.

Files land in `<root>/<dataset>/date=YYYY-MM-DD/part-<time>-<pid>-<seq>.parquet`; the
monitoring phase reads them all with one glob. Sensitive columns never reach this module.
A request only appends Python objects to a list; frames are built by the flusher thread.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl


def log_root(environ=os.environ) -> Path:
    """Where the log goes: LIFECYCLE_PREDICTION_LOG_DIR (default `artifacts/predictions`, the default
    workdir's). A relative path is taken from the folder `bentoml serve` was started in ($PWD), not
    from the bento's folder in the BentoML store, where the workers run."""
    root = Path(environ.get("LIFECYCLE_PREDICTION_LOG_DIR", "artifacts/predictions"))
    return root if root.is_absolute() else Path(environ.get("PWD", os.getcwd())) / root


class PredictionLog:
    def __init__(self, root: Path, dataset: str, schema: dict, flush_rows: int = 5000, flush_seconds: float = 2.0):
        self.folder = Path(root) / dataset
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._rows: list[dict] = []
        self._frames: list[pl.DataFrame] = []
        self._count = 0
        self._seq = 0
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
            self._seq += 1
            seq = self._seq
        if rows:
            frames = [pl.DataFrame(rows, schema=self.schema, orient="row"), *frames]
        if not frames:
            return None
        batch = pl.concat([f.select(self.schema) if f.schema != self.schema else f for f in frames], how="vertical")
        now = datetime.now(UTC)
        folder = self.folder / f"date={now:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{now:%H%M%S%f}-{os.getpid()}-{seq:06d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        batch.write_parquet(tmp)
        tmp.replace(path)
        return path

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
