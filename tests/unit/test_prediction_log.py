"""Where the served bento writes its prediction log and stores the labels sent to it."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.core.logs import PredictionLog, label_root, log_root
from tasks.stores.served import parts, read_log


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


def _logged(tmp_path: Path, rows: list[dict], frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.Schema]:
    log = PredictionLog(tmp_path, "d", SCHEMA, flush_seconds=3600)
    log.append_rows(rows)
    for frame in frames:
        log.append_frame(frame)
    log.close()
    (part,) = parts(tmp_path / "d")
    return read_log(tmp_path / "d"), pl.read_parquet_schema(part)


def test_records_and_bulk_frames_share_one_part_with_coded_columns_that_read_as_text(tmp_path):
    rows = [{"plan": "pro", "tenure": 3, "request_id": "r1", "label": "Yes"}]
    bulk = pl.DataFrame({"plan": ["basic", None], "request_id": ["r2", "r2"], "label": ["No", "No"]}).with_columns(
        pl.col("plan").cast(SCHEMA["plan"]),
        pl.col("request_id").cast(pl.Categorical),
        pl.col("label").cast(SCHEMA["label"]),
    )  # a frame lacking a column of the log: null there
    logged, stored = _logged(tmp_path, rows, [bulk])
    assert stored["plan"] == SCHEMA["plan"] and stored["request_id"] == pl.Categorical
    assert logged.schema == pl.Schema(
        {"plan": pl.String, "tenure": pl.Int64, "request_id": pl.String, "label": pl.String}
    )
    assert logged.rows() == [("pro", 3, "r1", "Yes"), ("basic", None, "r2", "No"), (None, None, "r2", "No")]


def test_a_value_outside_its_enum_is_logged_as_text_not_dropped(tmp_path):
    rows = [{"plan": "pro", "tenure": 1, "request_id": "r1", "label": "Yes"}]
    odd = [{"plan": "enterprise", "tenure": 2, "request_id": "r2", "label": "No"}]
    logged, stored = _logged(tmp_path, rows + odd, [])
    assert stored["plan"] == pl.String
    assert logged.get_column("plan").to_list() == ["pro", "enterprise"]
