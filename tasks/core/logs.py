"""The served bento's logs. The prediction log: every answered row is in a file before its answer is sent.

Each worker appends its rows, one JSON line each, to a segment file of its own,
`<root>/<dataset>/wal/<date>T<time>-<pid>-<random>.jsonl` (its first line the log's schema), and holds
an exclusive `flock` on it while it lives; a thread syncs it to disk every few milliseconds. A killed
worker loses nothing it answered (the kernel keeps what was written). Every `flush_seconds` (or
`flush_rows`) the worker starts a new segment and rolls the closed one into a Parquet part named after
it, `<root>/<dataset>/date=YYYY-MM-DD/part-<time>-<pid>-<random>.parquet`, then deletes it: a part that
exists means its segment was rolled, so a crash in between never duplicates rows. A segment whose lock
can be taken belongs to a dead worker: starting and live workers and every reader (`roll_leftovers`)
roll it, exactly once. The monitoring phase reads the parts with one glob (segments do not match it).
A failed write (a full disk…) never stops the log: the rows wait in memory, bounded
(`max_pending_rows`; past it they are counted as dropped), and are retried with a backoff of at most
`MAX_BACKOFF` seconds; the owner is told through `LogEvents` and `healthy()` is false meanwhile.
Bulk frames are written as parts of their own, before the answer.
Columns with few distinct values (categories, labels, versions, the request id) are written as
Parquet dictionaries from their Enum/Categorical codes (half the write time of text); every reader
goes through `as_text`, so a log reads as text whatever wrote it.
Labels sent to `/feedback` land in the label store beside it, one part file per request.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
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
    """One whole part file under `folder/date=…/`, named by the time and this process."""
    now = datetime.now(UTC)
    return _write_whole(_part_path(folder, f"{now:%Y-%m-%d}", f"{now:%H%M%S%f}-{os.getpid()}-{_random()}"), frame)


def _random() -> str:
    return uuid.uuid4().hex[:8]


def _part_path(folder: Path, day: str, stem: str) -> Path:
    return Path(folder) / f"date={day}" / f"part-{stem}.parquet"


def _write_whole(path: Path, frame: pl.DataFrame) -> Path:
    """`frame` at `path`, whole or not at all: written aside, synced, renamed into place (the file aside
    is removed if anything fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.write_parquet(tmp, **SERVED_PARQUET)
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def _in_schema(frames: list[pl.DataFrame], schema: dict) -> pl.DataFrame:
    """The frames in the log's schema; as text if a value is not in its column's Enum."""
    try:
        return pl.concat([f if f.schema == schema else _conform(f, schema) for f in frames])
    except pl.exceptions.InvalidOperationError:
        return pl.concat([_conform(as_text(f), text_schema(schema)) for f in frames])


# -- segments: a worker's rows, one JSON line each, in an append-only file it holds locked -----------------
WAL = "wal"  # the segments' folder in a log folder
SEGMENT = ".jsonl"
_LINE = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NAIVE_UTC  # a naive time is UTC, as the Parquet log reads it
MAX_BACKOFF = 1.0  # seconds between retries of a failing write, at most: writing resumes that soon


class WriteFailed(OSError):
    """A segment write failed after `kept` bytes of whole lines (a half-written line is cut off again)."""

    def __init__(self, kept: int, cause: OSError):
        super().__init__(cause.errno, cause.strerror)
        self.kept, self.cause = kept, cause


class _Segment:
    """This process's open segment: created under a hidden name, locked, given its header, then renamed
    into place, so no other process ever finds it unlocked."""

    def __init__(self, wal: Path, header: bytes):
        now = datetime.now(UTC)
        self.path = wal / f"{now:%Y-%m-%dT%H%M%S%f}-{os.getpid()}-{_random()}{SEGMENT}"
        self.started, self.rows, self.size, self.broken = time.monotonic(), 0, 0, False
        self._closing = threading.Lock()  # a sync never meets a closed (or reused) descriptor
        wal.mkdir(parents=True, exist_ok=True)
        hidden = self.path.with_name(f".{self.path.name}.new")
        self.fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.write(header)
            os.rename(hidden, self.path)
        except BaseException:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                hidden.unlink()
            raise

    def write(self, data: bytes) -> None:
        """Append whole lines; on failure, cut a half-written line off and raise `WriteFailed`."""
        done, view = 0, memoryview(data)
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            kept = data.rfind(b"\n", 0, done) + 1
            if kept != done:
                try:
                    os.ftruncate(self.fd, self.size + kept)
                except OSError:
                    self.broken = True  # never written again: its cut last line is skipped by the roll-up
            self.size += kept
            raise WriteFailed(kept, exc) from exc
        self.size += done

    def due(self, rows: int, seconds: float) -> bool:
        return self.broken or self.rows >= rows or (self.rows > 0 and time.monotonic() - self.started >= seconds)

    def sync(self) -> None:
        with self._closing:
            if self.fd >= 0:
                os.fdatasync(self.fd)

    def close(self) -> None:
        with self._closing:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _header(schema: dict) -> bytes:
    """A segment's first line: the log's schema (Enum categories too), as an empty Arrow IPC file."""
    empty = io.BytesIO()
    pl.DataFrame(schema=schema).write_ipc(empty)
    return orjson.dumps({"schema": base64.b64encode(empty.getvalue()).decode()}, option=orjson.OPT_APPEND_NEWLINE)


def _schema_of(header: bytes) -> dict:
    return dict(pl.read_ipc(io.BytesIO(base64.b64decode(orjson.loads(header)["schema"]))).schema)


def _rows_of(body: bytes, schema: dict, logger: logging.Logger) -> pl.DataFrame:
    """A segment's rows (the lines after its header), as text where the schema has codes. A last line
    cut short (a crash or a full disk mid-write: never answered, or queued again) is left out."""
    body = body[: body.rfind(b"\n") + 1]
    text = text_schema(schema)
    try:
        return pl.read_ndjson(io.BytesIO(body), schema=text) if body else pl.DataFrame(schema=text)
    except pl.exceptions.ComputeError:  # not expected: a cut line is trimmed, or ends the file
        good = [line for line in body.splitlines() if _is_row(line)]
        logger.warning("prediction log: %d unreadable lines skipped", body.count(b"\n") - len(good))
        return pl.read_ndjson(io.BytesIO(b"\n".join(good)), schema=text) if good else pl.DataFrame(schema=text)


def _is_row(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _roll(segment: Path, folder: Path, logger: logging.Logger) -> int:
    """Roll a segment (its lock held by the caller) into the part named after it, then delete it; the
    rows it held. A part that exists already holds them (rolled, then a crash before the delete)."""
    day, _, stem = segment.name.removesuffix(SEGMENT).partition("T")
    part = _part_path(folder, day, stem)
    header, _, body = segment.read_bytes().partition(b"\n")
    if part.exists():
        rows = body.count(b"\n")
    else:
        schema = _schema_of(header)
        frame = _rows_of(body, schema, logger)
        rows = frame.height
        if rows:
            _write_whole(part, _in_schema([frame], schema))
    segment.unlink()
    return rows


@dataclass(frozen=True)
class Recovered:
    """A dead writer's segment, rolled into its part."""

    segment: Path
    pid: int
    rows: int


def roll_leftovers(folder: Path, logger: logging.Logger | None = None) -> list[Recovered]:
    """Roll every segment of a log folder whose writer is gone (its lock can be taken) into its part,
    exactly once however many processes try at the same time; live writers' segments are left alone.
    Raises OSError if a part cannot be written (its segment stays for the next try)."""
    logger = logger or logging.getLogger(__name__)
    wal = Path(folder) / WAL
    try:
        names = sorted(os.listdir(wal))
    except FileNotFoundError:
        return []
    recovered = []
    for name in names:
        if name.endswith(SEGMENT) and not name.startswith("."):
            rows = _if_writer_gone(wal / name, lambda path: _roll(path, Path(folder), logger))
            if rows is not None:
                recovered.append(Recovered(wal / name, int(name.split("-")[-2]), rows))
        elif name.endswith(".new"):  # its writer died creating it: no rows yet
            _if_writer_gone(wal / name, lambda path: path.unlink())
    return recovered


def _if_writer_gone(path: Path, act):
    """`act(path)` under the file's lock if no live process holds it (None if one does, or it went)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if os.fstat(fd).st_nlink == 0:  # rolled and deleted by another process meanwhile
            return None
        return act(path)
    finally:
        os.close(fd)


class LogEvents:
    """What a log tells its owner as it happens; nothing here (the service counts them on /metrics)."""

    def failed(self, step: str) -> None:
        """A write, sync, segment, roll-up or part failed (it is retried)."""

    def dropped(self, rows: int) -> None:
        """Answered rows that could not be kept: the disk failed and the memory bound was reached."""

    def pending(self, rows: int) -> None:
        """Answered rows now waiting in memory for the disk."""


class PredictionLog:
    """One process's prediction log (see the module docstring). `append_rows` is on the request path:
    one `os.write` of the rows' JSON lines, a few microseconds a row."""

    def __init__(
        self,
        root: Path,
        dataset: str,
        schema: dict,
        flush_rows: int = 5000,
        flush_seconds: float = 2.0,
        *,
        max_pending_rows: int = 100_000,
        sync_seconds: float = 0.005,
        events: LogEvents | None = None,
        logger: logging.Logger | None = None,
    ):
        self.folder = Path(root) / dataset
        self.schema = schema
        self.flush_rows, self.flush_seconds, self.sync_seconds = flush_rows, flush_seconds, sync_seconds
        self.max_pending_rows = max_pending_rows
        self.events = events or LogEvents()
        self.logger = logger or logging.getLogger(__name__)
        self.dropped = 0
        self._header = _header(schema)
        self._lock = threading.Lock()  # the open segment and what waits in memory
        self._rolling = threading.Lock()  # one roll-up at a time
        self._segment: _Segment | None = None
        self._closed: list[_Segment] = []  # rotated out, still locked until rolled
        self._lines: list[bytes] = []  # rows the disk refused, as JSON lines, oldest first
        self._frames: list[pl.DataFrame] = []  # bulk frames whose part could not be written
        self._pending_rows = 0
        self._failing: dict[str, float] = {}  # step → since when (monotonic)
        self._leftovers_checked = 0.0
        self._stop, self._due, self._written = threading.Event(), threading.Event(), threading.Event()
        with self._lock:
            self._rotate()
        self._roll_leftovers()
        self._threads = [
            threading.Thread(target=self._run, name="prediction-log", daemon=True),
            threading.Thread(target=self._sync, name="prediction-log-sync", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the request path ----------------------------------------------------------------------------------
    def append_rows(self, rows: list[dict]) -> None:
        """Log rows (dicts keyed by the schema's columns): in the segment when this returns, or waiting in
        memory (or counted as dropped) if the disk fails."""
        data = b"".join([orjson.dumps(row, option=_LINE) for row in rows])
        with self._lock:
            segment = self._segment
            if segment is None or segment.broken or self._lines:  # after what waits
                self._queue_lines(data)
                return
            try:
                segment.write(data)
            except WriteFailed as failed:
                segment.rows += data.count(b"\n", 0, failed.kept)
                self._failed("write", failed.cause)
                self._queue_lines(data[failed.kept :])
                return
            segment.rows += len(rows)
            due = segment.rows >= self.flush_rows
        if not self._written.is_set():
            self._written.set()
        if due:
            self._due.set()

    def append_frame(self, frame: pl.DataFrame) -> None:
        """Log a bulk frame as a part of its own, written when this returns (waiting in memory if the
        disk fails)."""
        batch = _in_schema([frame], self.schema)
        try:
            write_part(self.folder, batch)
        except OSError as exc:
            with self._lock:
                self._failed("part", exc)
                if self._room(batch.height):
                    self._frames.append(batch)
            return
        self._works_again("part")

    def healthy(self) -> bool:
        """False while a write, sync, new segment or roll-up is failing (rows may wait in memory)."""
        return not self._failing

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    # -- failures (with the lock held) ---------------------------------------------------------------------
    def _queue_lines(self, data: bytes) -> None:
        if data and self._room(data.count(b"\n")):
            self._lines.append(data)

    def _room(self, rows: int) -> bool:
        """Whether `rows` more fit in memory; counted as waiting if so, as dropped if not."""
        if self._pending_rows + rows > self.max_pending_rows:
            if not self.dropped:
                self.logger.error(
                    "prediction log: %d rows wait in memory, its bound; answered rows are dropped (and "
                    "counted) until the disk takes them",
                    self._pending_rows,
                )
            self.dropped += rows
            self.events.dropped(rows)
            return False
        self._pending_rows += rows
        self.events.pending(self._pending_rows)
        return True

    def _failed(self, step: str, exc: BaseException) -> None:
        self.events.failed(step)
        if step not in self._failing:
            self._failing[step] = time.monotonic()
            self.logger.error("prediction log: %s failed in %s (%s); retried until it works", step, self.folder, exc)

    def _works_again(self, step: str) -> None:
        """`_recovered`, taking the lock only if `step` was failing (a success is the common case)."""
        if step in self._failing:
            with self._lock:
                self._recovered(step)

    def _recovered(self, step: str) -> None:
        since = self._failing.pop(step, None)
        if since is not None:
            self.logger.warning("prediction log: %s works again after %.1f s", step, time.monotonic() - since)

    # -- the writer thread: retries, new segments, roll-ups, leftovers -------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            if self._failing:
                backoff = min(max(2 * backoff, 0.05), MAX_BACKOFF)
                self._stop.wait(backoff)
            else:
                backoff = 0.0
                self._due.wait(self._until_due())
            self._due.clear()
            if self._stop.is_set():
                return
            try:
                self._write_waiting()
                self._roll_closed()
                if time.monotonic() - self._leftovers_checked >= self.flush_seconds:
                    self._roll_leftovers()
            except Exception as exc:  # never expected; the writer must outlive it
                with self._lock:
                    self._failed("roll", exc)

    def _until_due(self) -> float:
        segment = self._segment
        if segment is None or not segment.rows:
            return self.flush_seconds
        return max(0.0, segment.started + self.flush_seconds - time.monotonic())

    def _rotate(self) -> None:
        """A new segment in place of a due, broken or missing one (with the lock held); the old one waits
        to be rolled. If none can be created, a sound old one goes on."""
        old = self._segment
        if old is not None and not old.due(self.flush_rows, self.flush_seconds):
            return
        try:
            new = _Segment(self.folder / WAL, self._header)
        except OSError as exc:
            self._failed("segment", exc)
            if old is not None and not old.broken:
                return
            new = None
        else:
            self._recovered("segment")
        if old is not None:
            self._closed.append(old)
        self._segment = new

    def _write_waiting(self) -> None:
        """Rows waiting in memory to the segment (a new one first if due), bulk frames as parts."""
        with self._lock:
            self._rotate()
            if self._lines and self._segment is not None:
                lines, self._lines = b"".join(self._lines), []
                try:
                    self._segment.write(lines)
                except WriteFailed as failed:
                    self._failed("write", failed.cause)
                    self._lines = [lines[failed.kept :]]
                    kept = failed.kept
                else:
                    self._recovered("write")
                    kept = len(lines)
                written = lines.count(b"\n", 0, kept)
                self._segment.rows += written
                self._pending_rows -= written
                self._written.set()
            frames, self._frames = self._frames, []
        for frame in frames:  # outside the lock: requests go on while a big part is written
            try:
                write_part(self.folder, frame)
            except OSError as exc:
                with self._lock:
                    self._failed("part", exc)
                    self._frames.append(frame)
            else:
                with self._lock:
                    self._pending_rows -= frame.height
                    self._recovered("part")
        self.events.pending(self._pending_rows)

    def _roll_closed(self) -> None:
        with self._rolling:
            while self._closed:
                segment = self._closed[0]
                try:
                    segment.sync()
                    _roll(segment.path, self.folder, self.logger)
                except OSError as exc:
                    with self._lock:
                        self._failed("roll", exc)
                    return
                segment.close()
                self._closed.pop(0)
        self._works_again("roll")

    def _roll_leftovers(self) -> None:
        """Roll dead workers' segments, each one logged: the worker's pid and the rows recovered."""
        self._leftovers_checked = time.monotonic()
        try:
            with self._rolling:
                recovered = roll_leftovers(self.folder, self.logger)
        except OSError as exc:
            with self._lock:
                self._failed("roll", exc)
            return
        for r in recovered:
            self.logger.warning(
                "prediction log: worker pid %d is gone; %d rows it answered recovered from %s", r.pid, r.rows, r.segment
            )

    # -- the sync thread: what was written is on disk within a few milliseconds ----------------------------
    def _sync(self) -> None:
        while not self._stop.is_set():
            self._written.wait()
            time.sleep(self.sync_seconds)  # the writes of a few milliseconds in one sync
            self._written.clear()
            segment = self._segment
            if segment is None:
                continue
            try:
                segment.sync()
            except OSError as exc:
                with self._lock:
                    self._failed("sync", exc)
            else:
                self._works_again("sync")

    def close(self) -> None:
        """Stop the threads; write what waits, roll this process's segments into parts and release them.
        Rows the disk still refuses are counted as dropped."""
        self._stop.set()
        self._due.set()
        self._written.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._write_waiting()
        with self._lock:
            if self._segment is not None:
                self._closed.append(self._segment)
                self._segment = None
        self._roll_closed()
        for segment in self._closed:  # left for the next worker or reader to roll
            segment.close()
        with self._lock:
            if self._pending_rows:
                self.logger.error("prediction log: %d rows could not be written before exit", self._pending_rows)
                self.dropped += self._pending_rows
                self.events.dropped(self._pending_rows)
                self._lines, self._frames, self._pending_rows = [], [], 0
