"""Label files through the real `labels` flow: every error names the file; a label from the future is
quarantined, so a later correction wins."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from flows.labels import labels as labels_flow
from tasks.core.errors import DataError
from tasks.core.feedback import latest_labels
from tasks.core.spec import load_spec
from tasks.stores.served import read_labels
from tasks.stores.workdir import Workdir
from tests.conftest import FIXTURES

CONFIG = FIXTURES / "orders.yaml"


@pytest.mark.parametrize(
    ("columns", "wrong"),
    [
        ({"prediction_id": ["a"], "label_value": ["kept"]}, "a `outcome` (or `label`) column"),
        ({"customer": ["a"], "outcome": ["kept"]}, "a `prediction_id` or `order_id` column"),
    ],
)
def test_a_label_file_with_the_wrong_columns_fails_naming_the_file(tmp_path, columns, wrong):
    file = tmp_path / "wrong-columns.csv"
    pl.DataFrame(columns).write_csv(file)
    with pytest.raises(DataError, match="^" + re.escape(f"{file}: labels need {wrong}")):
        labels_flow(config=CONFIG, labels=file, workdir=tmp_path / "w")


def test_a_missing_or_unreadable_label_file_fails_naming_the_file(tmp_path):
    missing = tmp_path / "none.csv"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        labels_flow(config=CONFIG, labels=missing, workdir=tmp_path / "w")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        labels_flow(config=CONFIG, labels=broken, workdir=tmp_path / "w")


def test_a_label_from_the_future_is_quarantined_and_a_later_correction_wins(tmp_path):
    spec, workdir = load_spec(CONFIG), tmp_path / "w"
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    first = tmp_path / "first.csv"
    pl.DataFrame(
        {"prediction_id": ["a", "b"], "outcome": ["kept", "kept"], "observed_at": ["2030-01-01", hour_ago]}
    ).write_csv(first)
    ingested = labels_flow(config=CONFIG, labels=first, workdir=workdir)
    assert (ingested.rows_in, ingested.stored, ingested.quarantined) == (2, 1, 1)
    (reason,) = pl.read_parquet(ingested.quarantine_path).get_column("reason")
    assert reason == "observed_at: in the future (more than 300 s after it was received) (value=2030-01-01)"

    correction = tmp_path / "correction.csv"
    pl.DataFrame({"prediction_id": ["a", "b"], "outcome": ["returned", "returned"]}).write_csv(correction)
    assert labels_flow(config=CONFIG, labels=correction, workdir=workdir).stored == 2
    latest = latest_labels(read_labels(Workdir(workdir).labels(spec.name)))
    assert dict(latest.select("prediction_id", "label").rows()) == {"a": "returned", "b": "returned"}
