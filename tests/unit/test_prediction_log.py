"""Where the served bento writes its prediction log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("prediction_log", ROOT / "bentos" / "tabular" / "prediction_log.py")
prediction_log = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prediction_log)


def test_a_relative_log_folder_is_taken_from_where_serving_was_started_not_the_bento_folder():
    started_in = {"PWD": "/home/user/project"}
    assert prediction_log.log_root(started_in) == Path("/home/user/project/artifacts/predictions")
    relative = started_in | {"LIFECYCLE_PREDICTION_LOG_DIR": "elsewhere/predictions"}
    assert prediction_log.log_root(relative) == Path("/home/user/project/elsewhere/predictions")


def test_an_absolute_log_folder_is_kept():
    env = {"PWD": "/home/user/project", "LIFECYCLE_PREDICTION_LOG_DIR": "/srv/workdir/predictions"}
    assert prediction_log.log_root(env) == Path("/srv/workdir/predictions")
