"""The prepare flow under a real Prefect API: caching, versions, quarantine, other datasets."""

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from flows.prepare import prepare
from tasks.core.errors import DataError, QuarantineToleranceExceeded
from tasks.core.spec import load_spec
from tests.conftest import CONFIGS, FIXTURES, ROOT
from tests.corruption import corrupt_telco
from tests.flows.helpers import artifacts_of, task_states
from tests.unit.test_data import with_copies

TELCO = CONFIGS / "telco_churn.yaml"
CACHED_TASKS = ["ingest", "validate", "clean", "features", "split"]


def _run(**params):
    state = prepare(**params, return_state=True)
    return state.result(), state.state_details.flow_run_id


def _telco_copy(tmp_path, telco_raw):
    """A copy with one valid cell of its own, so no other test has warmed its cache."""
    path = tmp_path / "telco.csv"
    telco_raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("71.11"))
        .otherwise(pl.col("monthly_charges"))
        .alias("monthly_charges")
    ).write_csv(path)
    return path


def test_unchanged_data_reuses_the_snapshot_or_the_cache(tmp_path, telco_raw):
    source = _telco_copy(tmp_path, telco_raw)
    first, first_id = _run(config=TELCO, source=str(source), workdir=tmp_path / "wd")
    second, second_id = _run(config=TELCO, source=str(source), workdir=tmp_path / "wd")

    assert second == first  # same snapshot, same counts
    assert first.rows_in == first.rows_kept + first.rows_quarantined == 7043
    states_1, states_2 = task_states(first_id), task_states(second_id)
    assert all(states_1[t] == "Completed" for t in CACHED_TASKS), states_1
    assert states_2["find-snapshot"] == "Completed" and not set(CACHED_TASKS) & set(states_2), states_2

    # another workdir has no snapshot: the steps come from Prefect's cache, the snapshot is rewritten
    other, other_id = _run(config=TELCO, source=str(source), workdir=tmp_path / "other")
    assert other.data_version == first.data_version and Path(other.manifest_path).is_file()
    assert all(task_states(other_id)[t] == "Cached" for t in CACHED_TASKS)

    # a snapshot with a file missing is not reused
    (Path(first.manifest_path).parent / "test.parquet").unlink()
    again, again_id = _run(config=TELCO, source=str(source), workdir=tmp_path / "wd")
    assert again.data_version == first.data_version and (Path(first.manifest_path).parent / "test.parquet").is_file()
    assert task_states(again_id)["write-snapshot"] == "Completed"

    # one changed cell: new content hash, so nothing is served from the cache
    changed = telco_raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.lit("99.5"))
        .otherwise(pl.col("monthly_charges"))
        .alias("monthly_charges")
    )
    changed.write_csv(source)
    third, third_id = _run(config=TELCO, source=str(source), workdir=tmp_path / "wd")
    assert third.data_version != first.data_version
    assert task_states(third_id)["ingest"] == "Completed"


def test_snapshot_files_match_the_manifest(tmp_path):
    result, run_id = _run(config=TELCO, workdir=tmp_path)
    manifest = json.loads(Path(result.manifest_path).read_text())
    folder = Path(result.manifest_path).parent
    sizes = {s: pl.read_parquet(folder / f).height for s, f in manifest["files"].items()}
    assert sizes == {"train": result.train, "validation": result.validation, "test": result.test}
    assert sum(sizes.values()) == result.rows_kept
    assert manifest["spec_hash"] == result.spec_hash and manifest["source"]["sha256"]
    assert set(manifest["feature_names"]) <= set(pl.read_parquet_schema(folder / "train.parquet"))
    arts = artifacts_of(run_id)
    assert {"telco-churn-rows", "telco-churn-quarantine", "telco-churn-snapshot", "telco-churn-data-profile"} <= set(
        arts
    )
    # the data profile beside the snapshot: a row per column read, and Evidently's data summary
    profile = {r["column"]: r for r in json.loads((folder / "profile.json").read_text())}
    assert list(profile) == [c for c in load_spec(TELCO).input_columns]
    assert profile["total_charges"]["missing_share"] > 0 and profile["contract"]["top"].startswith("Month-to-month")
    assert abs(profile["tenure"]["association"]) > 0.3  # long-standing customers churn less
    assert (folder / "profile.html").stat().st_size > 100_000 and "Dataset Summary" in (
        folder / "profile.html"
    ).read_text()


def test_corrupted_file_within_tolerance_quarantines_exactly_the_bad_rows(tmp_path, telco_raw):
    corruption = corrupt_telco(telco_raw)
    # the id column turns duplicated ids into failures: declare it in a config of its own
    config = tmp_path / "telco_with_id.yaml"
    config.write_text(TELCO.read_text().replace("id_column: null", "id_column: customer_id"))
    source = corruption.write(tmp_path / "corrupted.csv")

    result, run_id = _run(config=config, source=str(source), workdir=tmp_path / "wd")
    assert result.rows_quarantined == len(corruption.broken)
    assert result.rows_in == result.rows_kept + result.rows_quarantined
    quarantined = pl.read_parquet(result.quarantine_path)
    assert sorted(quarantined.get_column("source_row")) == sorted(corruption.broken)
    assert quarantined.get_column("reason").is_not_null().all()
    table = artifacts_of(run_id)["telco-churn-quarantine"].data
    assert "field_uniqueness" in str(table) and "not_nullable" in str(table)


def test_too_many_bad_rows_fail_the_flow_but_keep_the_quarantine_file(tmp_path, telco_raw):
    bad = telco_raw.with_columns(
        pl.when(pl.int_range(pl.len()) < 500).then(pl.lit("-1")).otherwise(pl.col("tenure")).alias("tenure")
    )
    source = tmp_path / "bad.csv"
    bad.write_csv(source)
    with pytest.raises(QuarantineToleranceExceeded, match=r"500 of 7043 rows.*tenure in_range"):
        prepare(config=TELCO, source=str(source), workdir=tmp_path / "wd")
    files = list((tmp_path / "wd" / "quarantine").rglob("*.parquet"))
    assert len(files) == 1 and pl.read_parquet(files[0]).height == 500


def _telco_config(tmp_path, duplicates: str, max_fraction: float = 0.2) -> Path:
    config = tmp_path / f"telco_{duplicates}.yaml"
    text = TELCO.read_text().replace("duplicates: keep", f"duplicates: {duplicates}")
    config.write_text(text.replace("max_fraction: 0.02", f"max_fraction: {max_fraction}"))
    return config


@pytest.mark.parametrize("policy", ["quarantine", "drop", "keep"])
def test_a_file_with_ten_percent_copies_gets_the_declared_outcome(tmp_path, telco_raw, policy):
    raw, copies = with_copies(telco_raw)
    source = tmp_path / "copies.csv"
    raw.write_csv(source)
    result, run_id = _run(config=_telco_config(tmp_path, policy), source=str(source), workdir=tmp_path / "wd")
    assert result.rows_in == raw.height == result.rows_kept + result.rows_quarantined + result.rows_dropped
    quarantined = pl.read_parquet(result.quarantine_path)
    if policy == "quarantine":
        assert dict(quarantined.select("source_row", "reason").rows()) == {
            row: f"duplicate of row {first}" for row, first in copies.items()
        }
        assert "(all columns)" in str(artifacts_of(run_id)["telco-churn-quarantine"].data)
    assert result.rows_dropped == (len(copies) if policy == "drop" else 0)
    assert result.rows_kept == raw.height - (0 if policy == "keep" else len(copies))
    folder = Path(result.manifest_path).parent
    test, train = (pl.read_parquet(folder / f"{s}.parquet") for s in ("test", "train"))
    assert test.join(train, on=test.columns, how="semi", nulls_equal=True).height == 0  # no test row in train


def test_copies_beyond_the_tolerance_fail_the_default_policy_naming_them(tmp_path, telco_raw):
    raw, copies = with_copies(telco_raw)
    source = tmp_path / "copies.csv"
    raw.write_csv(source)
    with pytest.raises(
        QuarantineToleranceExceeded, match=rf"{len(copies)} of {raw.height} rows.*\(all columns\) duplicate"
    ):
        prepare(config=_telco_config(tmp_path, "quarantine", 0.02), source=str(source), workdir=tmp_path / "wd")


def _one_class(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.filter(pl.col("churn") == "No")


def _one_row_twice_labelled(raw: pl.DataFrame) -> pl.DataFrame:
    same = pl.concat([raw.head(1)] * 250)
    return pl.concat([same, same.with_columns(pl.lit("Yes").alias("churn"))])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (_one_class, r"the kept rows have only one class of `churn` \('No': 5174 rows\)"),
        (
            lambda raw: pl.concat([raw.head(1)] * 1000),
            r"the kept rows have only one class of `churn` \('No': 1000 rows\)",
        ),
        (_one_row_twice_labelled, "all 500 kept rows have the same feature values"),
    ],
)
def test_a_source_a_model_cannot_learn_from_fails_naming_the_file_and_is_not_retried(
    tmp_path, telco_raw, rows, message
):
    source = tmp_path / "unlearnable.csv"
    rows(telco_raw).write_csv(source)
    with pytest.raises(DataError, match=rf"{source}: {message}"):
        prepare(config=TELCO, source=str(source), workdir=tmp_path / "wd")
    (check,) = _failed_task_runs_naming(str(source))
    assert check.name.startswith("check-trainable") and check.run_count == 1


@pytest.mark.parametrize("config", [CONFIGS / "credit_data.yaml", FIXTURES / "orders.yaml"])
def test_other_datasets_run_through_prepare_unchanged(tmp_path, config):
    result, _ = _run(config=config, workdir=tmp_path)
    assert result.rows_kept > 0 and result.rows_in == result.rows_kept + result.rows_quarantined
    assert result.train + result.validation + result.test == result.rows_kept


def test_cli_help_lists_the_parameters():
    out = subprocess.run(
        [sys.executable, "-m", "flows.prepare", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    for option in ("--config", "--source", "--workdir"):
        assert option in out


def test_cli_prints_a_json_summary_as_its_last_line(tmp_path, cli_env):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.prepare", "--config", str(FIXTURES / "orders.yaml"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["dataset"] == "orders"
    assert summary["rows_in"] == summary["rows_kept"] + summary["rows_quarantined"] == 240


def test_cli_failure_is_a_json_line_and_a_nonzero_exit(tmp_path, cli_env):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.prepare", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env,
        timeout=300,
    )
    assert proc.returncode == 1
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not summary["ok"] and "not found" in summary["error"]


def _failed_task_runs_naming(text: str, timeout: float = 30) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            failed = TaskRunFilter(state=dict(type=TaskRunFilterStateType(any_=[StateType.FAILED])))
            runs = [r for r in client.read_task_runs(task_run_filter=failed) if text in (r.state.message or "")]
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def test_a_broken_file_fails_prepare_at_once_naming_the_line_and_is_not_retried(tmp_path, cli_env):
    source = tmp_path / "ragged.csv"
    lines = (FIXTURES / "orders.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0]  # line 6 loses its last field
    source.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "flows.prepare", "--config", str(FIXTURES / "orders.yaml"), "--source", str(source)]
    proc = subprocess.run(
        [*cmd, "--workdir", str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT, env=cli_env, timeout=300
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not summary["ok"] and f"{source}, line 6: 8 fields, the header has 9" in summary["error"]
    assert "Retry 1/" not in log, log[-3000:]  # a data-contract error is never retried
    (ingest,) = _failed_task_runs_naming(str(source))
    assert ingest.name.startswith("ingest") and ingest.run_count == 1
