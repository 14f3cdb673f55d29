"""Prepare for tables larger than memory: slice by slice, nothing lost, one slice in memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.prepare import prepare
from tasks.core.errors import DataError, QuarantineToleranceExceeded, SpecError
from tasks.core.spec import read_yaml
from tasks.stores.snapshots import load_manifest, read_split
from tests.conftest import CONFIGS
from tests.unit.test_data import with_copies

ROWS, BAD_AT = 60_000, (5, 25_003, 59_999)
CAP_MIB = 1_600  # streaming 1M rows peaks at ~0.75 GB RSS, the in-memory path at ~3 GB


def _table(tmp_path, rows: int, bad: tuple[int, ...] = ()) -> tuple:
    raw = pl.read_csv(CONFIGS.parent / "data" / "telco_churn.csv", infer_schema=False)
    big = raw.sample(rows, with_replacement=True, seed=1).with_row_index("i")
    big = big.with_columns(
        pl.when(pl.col("i").is_in(list(bad))).then(pl.lit("-3")).otherwise(pl.col("tenure")).alias("tenure")
    ).drop("i")
    data = tmp_path / f"big-{rows}.parquet"
    big.write_parquet(data, row_group_size=10_000)
    body = read_yaml(CONFIGS / "telco_churn.yaml")
    body["source"] = {"path": str(data)}
    config = tmp_path / f"big-{rows}.yaml"
    config.write_text(yaml.safe_dump(body))
    return config, big


def test_streaming_keeps_every_row_accounted_for_and_splits_deterministically(tmp_path):
    config, big = _table(tmp_path, ROWS, BAD_AT)
    result = prepare(config=config, workdir=tmp_path / "w", stream_rows=10_000)
    assert result.rows_in == ROWS == result.rows_kept + result.rows_quarantined
    assert result.rows_quarantined == len(BAD_AT)
    quarantined = pl.read_parquet(result.quarantine_path + "/*.parquet")
    assert sorted(quarantined.get_column("source_row").to_list()) == list(BAD_AT)  # global row numbers
    assert set(quarantined.get_column("failed_column")) == {"tenure"}
    manifest = load_manifest(result.manifest_path)
    test = read_split(result.manifest_path, "test")
    assert test.height == manifest.rows.test and abs(test.height / result.rows_kept - 0.2) < 0.02
    assert test.schema["tenure"] == pl.Int64 and "charges_per_month_of_tenure" in test.columns
    churn = (test.get_column("churn") == "Yes").mean()
    assert abs(churn - (big.get_column("churn") == "Yes").mean()) < 0.03  # the hash split keeps the class mix
    again = prepare(config=config, workdir=tmp_path / "w2", stream_rows=7_000)
    assert again.data_version == result.data_version  # the slice size does not change the data


@pytest.mark.parametrize("policy", ["quarantine", "drop"])
def test_streaming_finds_copies_across_slices_as_the_in_memory_path_does(tmp_path, policy):
    raw, copies = with_copies(pl.read_csv(CONFIGS.parent / "data" / "telco_churn.csv", infer_schema=False))
    data = tmp_path / "copies.parquet"
    raw.write_parquet(data)
    body = read_yaml(CONFIGS / "telco_churn.yaml")
    body["source"], body["quarantine"] = {"path": str(data)}, {"max_fraction": 0.2, "duplicates": policy}
    config = tmp_path / "copies.yaml"
    config.write_text(yaml.safe_dump(body))

    streamed = prepare(config=config, workdir=tmp_path / "s", stream_rows=1_000)
    in_memory = prepare(config=config, workdir=tmp_path / "m")
    for result in (streamed, in_memory):
        assert result.rows_in == raw.height == result.rows_kept + result.rows_quarantined + result.rows_dropped
        assert result.rows_kept == raw.height - len(copies)
        assert result.rows_dropped == (len(copies) if policy == "drop" else 0)
    if policy == "quarantine":
        reasons = pl.read_parquet(streamed.quarantine_path + "/*.parquet").select("source_row", "reason")
        assert dict(reasons.rows()) == {row: f"duplicate of row {first}" for row, first in copies.items()}
        assert reasons.equals(pl.read_parquet(in_memory.quarantine_path).select("source_row", "reason"))
    folder = Path(streamed.manifest_path).parent
    test, train = (pl.read_parquet(folder / f"{s}/*.parquet") for s in ("test", "train"))
    assert test.join(train, on=test.columns, how="semi", nulls_equal=True).height == 0


def test_streaming_fails_a_one_class_table_naming_the_file_and_writes_no_snapshot(tmp_path):
    config, big = _table(tmp_path, 3_000)
    one_class = tmp_path / "one-class.parquet"
    big.filter(pl.col("churn") == "No").write_parquet(one_class)
    with pytest.raises(DataError, match=f"{one_class}: the kept rows have only one class of `churn`"):
        prepare(config=config, source=str(one_class), workdir=tmp_path / "w", stream_rows=500)
    assert not list((tmp_path / "w" / "snapshots").rglob("manifest.json"))


def test_streaming_fails_a_table_beyond_its_tolerance_and_writes_no_snapshot(tmp_path):
    config, _ = _table(tmp_path, 5_000, tuple(range(0, 5_000, 10)))
    with pytest.raises(QuarantineToleranceExceeded):
        prepare(config=config, workdir=tmp_path / "w", stream_rows=1_000)
    assert not list((tmp_path / "w" / "snapshots").rglob("manifest.json"))


def test_streaming_fits_a_memory_cap_that_stops_the_in_memory_path(tmp_path, cli_env):
    """1M rows, each path in a memory cgroup of CAP_MIB (the process, its children, its page cache)."""
    from benchmarks.measure import OutOfMemory, run_measured

    config, _ = _table(tmp_path, 1_000_000)

    def cmd(name: str) -> list[str]:
        return [sys.executable, "-m", "flows.prepare", "--config", str(config), "--workdir", str(tmp_path / name)]

    out = tmp_path / "stream.json"
    _, peak = run_measured([*cmd("stream"), "--stream-rows", "100000"], cli_env, tmp_path / "stream.log", out,
                           memory_cap_mib=CAP_MIB)  # fmt: skip
    print(f"\npeak RSS on 1M rows, streaming under a {CAP_MIB} MiB cap: {peak:.0f} MiB")
    summary = json.loads(out.read_text().strip().splitlines()[-1])
    assert summary["rows_in"] == 1_000_000 == summary["rows_kept"] + summary["rows_quarantined"]
    with pytest.raises(OutOfMemory):
        run_measured(cmd("eager"), cli_env, tmp_path / "eager.log", memory_cap_mib=CAP_MIB)


def test_streaming_a_regression_table_quarantines_and_splits_as_in_memory(tmp_path):
    """The bundled regression sample, in slices and whole: the same rows kept and quarantined for
    the same reasons, every tenth of the target's range in each split at its share, no copy straddling."""
    body = read_yaml(CONFIGS / "diamonds.yaml")
    body["source"] = {"path": str(CONFIGS.parent / "data" / "diamonds.csv")}
    config = tmp_path / "regression.yaml"
    config.write_text(yaml.safe_dump(body))
    streamed = prepare(config=config, workdir=tmp_path / "s", stream_rows=10_000)
    in_memory = prepare(config=config, workdir=tmp_path / "m")
    for result in (streamed, in_memory):
        assert (result.rows_in, result.rows_kept, result.rows_quarantined) == (53_940, 53_917, 23)
        assert load_manifest(result.manifest_path).task == "regression"
    reasons = pl.read_parquet(streamed.quarantine_path + "/*.parquet").select("source_row", "reason").sort("source_row")
    assert reasons.equals(pl.read_parquet(in_memory.quarantine_path).select("source_row", "reason"))
    for result, tolerance in ((streamed, 0.02), (in_memory, 0.005)):  # a hash split: shares in expectation
        split = pl.concat([read_split(result.manifest_path, s).with_columns(pl.lit(s).alias("split"))
                           for s in ("train", "validation", "test")])  # fmt: skip
        assert split.schema["price"] == pl.Float64
        deciles = pl.col("price").rank("ordinal") * 10 // (pl.len() + 1)
        shares = split.group_by(deciles.alias("decile")).agg(
            (pl.col("split") == "test").mean().alias("test"), (pl.col("split") == "validation").mean().alias("val")
        )
        assert shares.height == 10
        for row in shares.iter_rows(named=True):
            assert abs(row["test"] - 0.2) < tolerance and abs(row["val"] - 0.15) < tolerance, (result, row)
        columns = [c for c in split.columns if c != "split"]
        assert split.filter(pl.col("split").n_unique().over(columns) > 1).height == 0  # 146 copies, together


def test_streaming_fails_a_one_value_regression_target_and_refuses_a_time_split(tmp_path):
    body = read_yaml(CONFIGS / "diamonds.yaml")
    one_value = tmp_path / "one-value.csv"
    pl.read_csv(CONFIGS.parent / "data" / "diamonds.csv").head(500).with_columns(pl.lit(900).alias("price")).write_csv(
        one_value
    )
    body["source"] = {"path": str(one_value)}
    config = tmp_path / "one-value.yaml"
    config.write_text(yaml.safe_dump(body))
    with pytest.raises(DataError, match=rf"{one_value}: the kept rows have a single value of `price` \(900 in all"):
        prepare(config=config, workdir=tmp_path / "w", stream_rows=100)
    assert not list((tmp_path / "w" / "snapshots").rglob("manifest.json"))
    orders = read_yaml(CONFIGS.parent / "tests" / "fixtures" / "orders.yaml")
    orders["source"] = {"path": str(CONFIGS.parent / "tests" / "fixtures" / "orders.csv")}
    timed = tmp_path / "timed.yaml"
    timed.write_text(yaml.safe_dump(orders))
    with pytest.raises(SpecError, match="split.strategy 'time' cannot be streamed"):
        prepare(config=timed, workdir=tmp_path / "t", stream_rows=100)
