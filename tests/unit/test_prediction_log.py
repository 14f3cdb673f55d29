"""Where the served bento writes its prediction log and stores the labels sent to it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from tasks.core.logs import WAL, LogEvents, PredictionLog, label_root, log_root, roll_leftovers
from tasks.stores.served import parts, read_log
from tests.disks import fill, small_disk

ROOT = Path(__file__).resolve().parents[2]


def test_a_relative_log_folder_is_taken_from_where_serving_was_started_not_the_bento_folder():
    started_in = {"PWD": "/home/user/project"}
    assert log_root(started_in) == Path("/home/user/project/artifacts/predictions")
    relative = started_in | {"LIFECYCLE_PREDICTION_LOG_DIR": "elsewhere/predictions"}
    assert log_root(relative) == Path("/home/user/project/elsewhere/predictions")


def test_an_absolute_log_folder_is_kept():
    env = {"PWD": "/home/user/project", "LIFECYCLE_PREDICTION_LOG_DIR": "/srv/workdir/predictions"}
    assert log_root(env) == Path("/srv/workdir/predictions")


def test_labels_land_beside_the_prediction_log_unless_told_otherwise():
    env = {"PWD": "/home/user/project", "LIFECYCLE_PREDICTION_LOG_DIR": "/srv/workdir/predictions"}
    assert label_root(env) == Path("/srv/workdir/labels")
    assert label_root(env | {"LIFECYCLE_LABEL_DIR": "truth"}) == Path("/home/user/project/truth")


# -- coded columns: written as dictionaries, read as text, nothing lost -----------------------------
SCHEMA = {
    "plan": pl.Enum(["basic", "pro"]),
    "tenure": pl.Int64,
    "request_id": pl.Categorical,
    "label": pl.Enum(["No", "Yes"]),
}


def _logged(tmp_path: Path, rows: list[dict], frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, list[pl.Schema]]:
    log = PredictionLog(tmp_path, "d", SCHEMA, flush_seconds=3600)
    log.append_rows(rows)
    for frame in frames:
        log.append_frame(frame)
    log.close()
    return read_log(tmp_path / "d"), [pl.read_parquet_schema(part) for part in parts(tmp_path / "d")]


def test_records_and_bulk_frames_are_logged_with_coded_columns_that_read_as_text(tmp_path):
    rows = [{"plan": "pro", "tenure": 3, "request_id": "r1", "label": "Yes"}]
    bulk = pl.DataFrame({"plan": ["basic", None], "request_id": ["r2", "r2"], "label": ["No", "No"]}).with_columns(
        pl.col("plan").cast(SCHEMA["plan"]),
        pl.col("request_id").cast(pl.Categorical),
        pl.col("label").cast(SCHEMA["label"]),
    )  # a frame lacking a column of the log: null there
    logged, stored = _logged(tmp_path, rows, [bulk])
    assert len(stored) == 2  # the records' part, rolled from their segment, and the bulk frame's own
    assert all(s["plan"] == SCHEMA["plan"] and s["request_id"] == pl.Categorical for s in stored)
    assert logged.schema == pl.Schema(
        {"plan": pl.String, "tenure": pl.Int64, "request_id": pl.String, "label": pl.String}
    )
    assert sorted(logged.rows(), key=str) == sorted(
        [("pro", 3, "r1", "Yes"), ("basic", None, "r2", "No"), (None, None, "r2", "No")], key=str
    )


def test_a_value_outside_its_enum_is_logged_as_text_not_dropped(tmp_path):
    rows = [{"plan": "pro", "tenure": 1, "request_id": "r1", "label": "Yes"}]
    odd = [{"plan": "enterprise", "tenure": 2, "request_id": "r2", "label": "No"}]
    logged, (stored,) = _logged(tmp_path, rows + odd, [])
    assert stored["plan"] == pl.String
    assert logged.get_column("plan").to_list() == ["pro", "enterprise"]


# -- nothing answered is lost: killed writers, full disks, crashes mid-roll ---------------------------------
def _row(i: int) -> dict:
    return {"plan": "pro" if i % 2 else "basic", "tenure": i, "request_id": f"r{i}", "label": "Yes"}


def _killed_writer(folder: Path, rows: int, logs: int = 1, then: str = "") -> None:
    """A process that logs `rows` rows into each of `logs` logs under `folder`, runs `then` (Python),
    and is killed (SIGKILL) before anything is rolled."""
    code = f"""
import os, signal
from pathlib import Path
from tasks.core.logs import PredictionLog
from tests.unit.test_prediction_log import SCHEMA, _row
logs = [PredictionLog(Path({str(folder)!r}), "d", SCHEMA, flush_seconds=3600) for _ in range({logs})]
for n, log in enumerate(logs):
    log.append_rows([_row(n * 1000 + i) for i in range({rows})])
{then}
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr


def test_a_killed_writer_loses_no_row_it_appended(tmp_path):
    _killed_writer(tmp_path, rows=7)
    (segment,) = (tmp_path / "d" / WAL).glob("*.jsonl")
    logged = read_log(tmp_path / "d")  # readers roll a dead writer's segment first
    assert sorted(logged.get_column("tenure")) == list(range(7))
    assert not segment.exists() and len(parts(tmp_path / "d")) == 1


def test_a_cut_last_line_is_left_out_when_a_segment_is_rolled(tmp_path):
    cut = "segment = next(Path(logs[0].folder, 'wal').glob('*.jsonl'))\n"
    cut += 'segment.open(\'ab\').write(b\'{"plan": "pro", "ten\')'  # a crash mid-write
    _killed_writer(tmp_path, rows=5, then=cut)
    (recovered,) = roll_leftovers(tmp_path / "d")
    assert recovered.rows == 5
    assert sorted(read_log(tmp_path / "d").get_column("tenure")) == list(range(5))


def test_a_leftover_segment_is_rolled_exactly_once_when_two_processes_try(tmp_path):
    live = PredictionLog(tmp_path, "d", SCHEMA, flush_seconds=3600)  # a live writer: never rolled by others
    live.append_rows([_row(99_000)])
    _killed_writer(tmp_path, rows=3, logs=20)
    assert len(list((tmp_path / "d" / WAL).glob("*.jsonl"))) == 21
    start = time.time() + 2
    code = f"""
import json, time
from pathlib import Path
from tasks.core.logs import roll_leftovers
time.sleep(max(0, {start} - time.time()))
print(json.dumps([str(r.segment) for r in roll_leftovers(Path({str(tmp_path / "d")!r}))]))
"""
    rollers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    rolled = [json.loads(p.communicate(timeout=60)[0]) for p in rollers]
    assert len(rolled[0]) + len(rolled[1]) == 20 and not set(rolled[0]) & set(rolled[1])
    logged = read_log(tmp_path / "d")
    assert logged.height == 60 and logged.get_column("request_id").n_unique() == 60
    assert len(parts(tmp_path / "d")) == 20
    assert len(list((tmp_path / "d" / WAL).glob("*.jsonl"))) == 1  # the live writer's
    live.close()
    assert read_log(tmp_path / "d").height == 61


def test_a_segment_whose_part_exists_is_only_deleted_never_rolled_twice(tmp_path):
    _killed_writer(tmp_path, rows=4)
    (segment,) = (tmp_path / "d" / WAL).glob("*.jsonl")
    kept = tmp_path / "copy"
    shutil.copy(segment, kept)
    roll_leftovers(tmp_path / "d")
    (part,) = parts(tmp_path / "d")
    written = part.stat().st_mtime_ns
    shutil.copy(kept, segment)  # as if the roller died between writing the part and deleting the segment
    (again,) = roll_leftovers(tmp_path / "d")
    assert again.rows == 4 and not segment.exists()
    assert parts(tmp_path / "d") == [part] and part.stat().st_mtime_ns == written
    assert read_log(tmp_path / "d").height == 4


class Counted(LogEvents):
    def __init__(self):
        self.failures, self.dropped_rows, self.waiting = 0, 0, 0

    def failed(self, step: str) -> None:
        self.failures += 1

    def dropped(self, rows: int) -> None:
        self.dropped_rows += rows

    def pending(self, rows: int) -> None:
        self.waiting = rows


def test_a_full_disk_never_stops_the_log_and_nothing_is_lost_uncounted(tmp_path):
    bound, appended = 300, 600
    with small_disk(tmp_path / "disk", "1m") as disk:
        events = Counted()
        log = PredictionLog(disk, "d", SCHEMA, flush_seconds=0.2, max_pending_rows=bound, events=events)
        filler = fill(disk)
        for start in range(0, appended, 10):
            log.append_rows([_row(i) for i in range(start, start + 10)])
        time.sleep(1)  # the writer retries (and fails) meanwhile
        assert not log.healthy() and events.failures >= 2
        assert 0 < log.pending_rows <= bound and events.waiting == log.pending_rows
        assert log.dropped > 0 and events.dropped_rows == log.dropped
        assert all(thread.is_alive() for thread in log._threads)

        filler.unlink()  # room again: writing resumes by itself within seconds
        freed = time.monotonic()
        while not (log.healthy() and log.pending_rows == 0) and time.monotonic() - freed < 5:
            time.sleep(0.05)
        assert log.healthy() and log.pending_rows == 0 and events.waiting == 0, time.monotonic() - freed
        log.close()
        logged = read_log(disk / "d")
        assert logged.height + log.dropped == appended and logged.height >= bound
        assert logged.get_column("request_id").n_unique() == logged.height
        assert [p.name for p in disk.rglob(".*")] == []  # no file aside (.tmp, .new) is left behind
        assert list((disk / "d" / WAL).iterdir()) == []


def test_a_log_whose_disk_is_full_from_the_start_logs_everything_once_there_is_room(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        filler = fill(disk)
        log = PredictionLog(disk, "d", SCHEMA, flush_seconds=0.2)  # no segment can be created yet
        assert not log.healthy()
        log.append_rows([_row(i) for i in range(50)])
        filler.unlink()
        deadline = time.monotonic() + 5
        while not log.healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.healthy()
        log.close()
        assert sorted(read_log(disk / "d").get_column("tenure")) == list(range(50)) and log.dropped == 0
