"""Data checks on the real bundled tables and on real corrupted copies of them."""

import hashlib

import numpy as np
import polars as pl
import pytest

from tasks.core.cast import clean
from tasks.core.features import add_features
from tasks.core.prepare import (
    SPLIT_COLUMN,
    SPLITS,
    assign_splits,
    duplicates_policy,
    find_duplicates,
    frame_digest,
    split_quarantine,
)
from tasks.core.profile import profile_rows
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec
from tasks.stores.snapshots import read_source
from tests.corruption import corrupt_telco


def _snapshot_rows(spec: DatasetSpec) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(raw, quarantined, split): the prepare phase's pure steps on the real file, real Pandera."""
    raw = read_source(spec)
    failures, dropped = duplicates_policy(find_failures(raw, spec), find_duplicates(raw), spec)
    kept, quarantined = split_quarantine(raw, failures, dropped)
    return raw, quarantined, assign_splits(add_features(clean(kept, spec), spec), spec)


SHA256 = {
    "telco_churn.csv": "899c3c65fe0e49f02a728e6087d1b7e44aa454a23f39498e08e972749f74a288",
    "credit_data.csv": "43c83a4630f1995f00b456becc4a84219616a2f2bae445e86c706264cc9050a4",
    "diamonds.csv": "9574730b03aba241d899c4a97511c5061b19358fab89510774fb6c24168345c4",
}


@pytest.mark.parametrize("spec_name", ["telco_spec", "credit_spec", "diamonds_spec"])
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


def test_telcos_data_version_does_not_move(telco_spec):
    _, quarantined, split = _snapshot_rows(telco_spec)
    assert quarantined.height == 0 and frame_digest(split)[:16] == "8f7392a80300e404"


def test_diamonds_sample_prepares_end_to_end(diamonds_spec):
    raw, quarantined, split = _snapshot_rows(diamonds_spec)
    assert raw.shape == (53_940, 10) and raw.columns[0] == "carat"  # as shipped: no row-index column
    # the impossible stones, found apart from the contract: a side of 0 mm or over 20 mm
    sides = [pl.col(c).cast(pl.Float64) for c in ("x", "y", "z")]
    impossible = raw.with_row_index().filter(pl.any_horizontal(*(s.eq(0) | s.gt(20) for s in sides)))
    assert impossible.height == 23
    assert quarantined.get_column("source_row").to_list() == impossible.get_column("index").to_list()
    assert set(quarantined.get_column("failed_check")) == {"in_range(0.1, 20.0)"}
    assert split.height + quarantined.height == raw.height  # nothing lost; 146 exact copies kept
    assert find_duplicates(raw).height == 146 and diamonds_spec.quarantine.duplicates == "keep"
    assert split.schema["price"] == pl.Float64 and "volume" in split.columns
    assert split.get_column("price").min() == 326 and split.get_column("price").max() == 18_823
    # the stratified split: each split 65/15/20 of every tenth of the price range
    edges = np.quantile(split.get_column("price").to_numpy(), np.linspace(0.1, 0.9, 9))
    shares = split.group_by(pl.col("price").cut(list(edges)).alias("decile")).agg(
        *((pl.col(SPLIT_COLUMN) == s).mean().alias(s) for s in SPLITS)
    )
    assert shares.height == 10
    for row in shares.iter_rows(named=True):
        assert abs(row["test"] - 0.2) < 0.005 and abs(row["validation"] - 0.15) < 0.005, row
    columns = [c for c in split.columns if c != SPLIT_COLUMN]
    assert split.filter(pl.col(SPLIT_COLUMN).n_unique().over(columns) > 1).height == 0  # copies together
    profile = {r["column"]: r for r in profile_rows(split, diamonds_spec)}
    assert profile["carat"]["association"] > 0.9  # heavier stones cost more
    assert profile["clarity"]["association"] is not None and profile["price"]["association"] is None
