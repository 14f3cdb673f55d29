"""Data checks on the real bundled tables and on real corrupted copies of them."""

import hashlib

import polars as pl
import pytest

from tasks.core.cast import clean
from tasks.core.prepare import find_duplicates, split_quarantine
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec
from tasks.stores.snapshots import read_source
from tests.corruption import corrupt_telco

SHA256 = {
    "telco_churn.csv": "899c3c65fe0e49f02a728e6087d1b7e44aa454a23f39498e08e972749f74a288",
    "credit_data.csv": "43c83a4630f1995f00b456becc4a84219616a2f2bae445e86c706264cc9050a4",
}


@pytest.mark.parametrize("spec_name", ["telco_spec", "credit_spec"])
def test_bundled_file_is_the_documented_one(request, spec_name):
    spec = request.getfixturevalue(spec_name)
    path = spec.resolve(spec.source.path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[path.name]


def test_telco_sample_passes_its_contract(telco_spec, telco_raw):
    assert telco_raw.shape == (7043, 20)
    assert find_failures(telco_raw, telco_spec).height == 0
    typed = clean(telco_raw, telco_spec)
    assert (typed.get_column("churn") == "Yes").mean() == pytest.approx(0.265, abs=0.001)
    # the table's one real quirk: empty total_charges, only for brand-new customers
    missing = typed.filter(pl.col("total_charges").is_null())
    assert missing.height == 11 and missing.get_column("tenure").unique().to_list() == [0]
    # no customer id: 22 rows repeat an earlier one exactly; the config keeps them (copies split together)
    assert find_duplicates(telco_raw).height == 22 and telco_spec.quarantine.duplicates == "keep"


def test_credit_sample_keeps_its_missing_values(credit_spec):
    raw = read_source(credit_spec)
    assert find_failures(raw, credit_spec).height == 0
    typed = clean(raw, credit_spec)
    assert typed.select(pl.col("Income", "Assets", "Debt").null_count()).row(0) == (381, 47, 18)
    assert find_duplicates(raw).height == 2 and credit_spec.quarantine.duplicates == "quarantine"  # the default


def _telco_with_id(spec: DatasetSpec, path) -> DatasetSpec:
    body = spec.model_dump() | {"id_column": "customer_id", "source": {"path": str(path)}}
    return DatasetSpec.model_validate(body)


def test_corrupted_file_every_bad_row_quarantined_with_its_reason(tmp_path, telco_spec, telco_raw):
    corruption = corrupt_telco(telco_raw)
    path = corruption.write(tmp_path / "telco_corrupted.csv")
    spec = _telco_with_id(telco_spec, path)

    raw = read_source(spec)
    failures = find_failures(raw, spec)
    kept, quarantined = split_quarantine(raw, failures)

    assert raw.height == kept.height + quarantined.height
    assert set(quarantined.get_column("source_row")) == set(corruption.broken)
    for row in quarantined.iter_rows(named=True):
        column, check = corruption.broken[row["source_row"]]
        assert row["failed_column"] == column
        assert row["failed_check"].startswith(check), row["reason"]
        assert row["reason"]
    # the rows that were not touched are kept, unchanged
    assert kept.select(telco_raw.columns).equals(
        telco_raw.filter(~pl.int_range(pl.len()).is_in(list(corruption.broken)))
    )
    clean(kept, spec)  # what is kept always casts cleanly
