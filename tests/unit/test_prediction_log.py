"""Where the served bento writes its prediction log and stores the labels sent to it."""

from __future__ import annotations

from pathlib import Path

from tasks.core.logs import label_root, log_root


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
