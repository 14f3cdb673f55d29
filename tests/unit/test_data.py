"""Pure data functions on tiny in-memory frames (no Prefect)."""

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.core.cast import clean
from tasks.core.errors import DataError, QuarantineToleranceExceeded, SpecError
from tasks.core.features import add_features
from tasks.core.logs import as_text
from tasks.core.prepare import (
    SPLIT_COLUMN,
    SPLITS,
    FailingCheck,
    QuarantineReport,
    assign_splits,
    check_tolerance,
    check_trainable,
    duplicates_policy,
    features_vary,
    find_duplicates,
    frame_digest,
    split_quarantine,
    target_classes,
)
from tasks.core.schema import find_failures
from tasks.core.spec import QuarantineSpec
from tasks.stores.snapshots import fingerprint_source, read_source, redact_uri


def _orders(orders_spec, **cols) -> pl.DataFrame:
    base = {
        "order_id": ["a", "b", "c"],
        "ordered_at": ["2025-01-01T00:00:00", "2025-01-02T00:00:00", "2025-01-03T00:00:00"],
        "amount_eur": ["10.5", "20", "30"],
        "items": ["1", "2", "3"],
        "channel": ["web", "app", "store"],
        "express": ["true", "false", "1"],
        "coupon": [None, "VIP", "NONE"],
        "note": ["", None, "x"],
        "outcome": ["kept", "returned", "kept"],
    }
    base.update(cols)
    return pl.DataFrame(base, schema={k: pl.String for k in base})


def test_clean_rows_pass_and_are_typed(orders_spec):
    raw = _orders(orders_spec)
    assert find_failures(raw, orders_spec).height == 0
    typed = clean(raw, orders_spec)
    assert typed.schema["items"] == pl.Int64
    assert typed.schema["express"] == pl.Boolean
    assert typed.schema["ordered_at"] == pl.Datetime("us")
    assert typed.get_column("express").to_list() == [True, False, True]


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [
        ("items", "2.5", "dtype(int)"),
        ("items", "two", "dtype(int)"),
        ("amount_eur", "1,5", "dtype(float)"),
        ("express", "perhaps", "dtype(bool)"),
        ("ordered_at", "yesterday", "dtype(datetime)"),
        ("items", "0", "in_range(1.0, 50.0)"),
        ("amount_eur", "-1", "in_range(0.0, 5000.0)"),
        ("channel", "fax", "isin(['web', 'app', 'store'])"),
        ("channel", None, "not_nullable"),
        ("outcome", "lost", "isin(['kept', 'returned'])"),
        ("order_id", "a", "field_uniqueness"),
    ],
)
def test_each_kind_of_bad_value_gets_one_reason_on_its_row(orders_spec, column, value, check):
    raw = (
        _orders(orders_spec)
        .with_row_index()
        .with_columns(pl.when(pl.col("index") == 1).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))
        .drop("index")
    )
    failures = find_failures(raw, orders_spec)
    assert failures.select("row", "column", "check").rows() == [(1, column, check)]
    kept, quarantined = split_quarantine(raw, failures)
    assert kept.height == 2 and quarantined.height == 1
    row = quarantined.row(0, named=True)
    assert row["source_row"] == 1 and row["failed_column"] == column and row["failed_check"] == check
    assert row["reason"].startswith(f"{column}: {check} (value=")


def test_a_type_error_is_not_reported_again_as_a_null(orders_spec):
    raw = _orders(orders_spec, items=["1", "x", "3"])
    failures = find_failures(raw, orders_spec)
    assert failures.rows() == [(1, "items", "dtype(int)", "x")]


def test_a_row_with_several_problems_is_quarantined_once_with_all_reasons(orders_spec):
    raw = _orders(orders_spec, items=["1", "x", "3"], channel=["web", "fax", "app"])
    kept, quarantined = split_quarantine(raw, find_failures(raw, orders_spec))
    assert (kept.height, quarantined.height) == (2, 1)
    assert len(quarantined.get_column("all_reasons")[0]) == 2


def test_missing_columns_are_a_spec_error(tmp_path, orders_spec):
    path = tmp_path / "o.csv"
    _orders(orders_spec).drop("channel").write_csv(path)
    with pytest.raises(SpecError, match="channel"):
        read_source(orders_spec.with_source(path))


def test_database_source_reads_through_sqlalchemy(tmp_path, orders_spec):
    import sqlite3

    db = tmp_path / "orders.db"
    raw = _orders(orders_spec)
    with sqlite3.connect(db) as con:
        con.execute(f"create table orders ({', '.join(c + ' text' for c in raw.columns)})")
        con.executemany(f"insert into orders values ({', '.join('?' * raw.width)})", raw.rows())
    spec = orders_spec.model_copy(
        update={
            "source": orders_spec.source.model_copy(
                update={"path": None, "uri": f"sqlite:///{db}", "query": "select * from orders"}
            )
        }
    )
    assert read_source(spec).equals(raw.drop("note"))  # the sensitive column is never read
    assert fingerprint_source(spec).sha256 == frame_digest(raw.drop("note"))


def test_uri_password_is_redacted():
    assert "secret" not in redact_uri("postgresql://me:secret@db/x")


def test_stratified_split_keeps_class_shares_and_is_reproducible(telco_spec, telco_raw):
    typed = clean(telco_raw, telco_spec)
    a = assign_splits(typed, telco_spec)
    assert a.equals(assign_splits(typed, telco_spec))
    shares = a.group_by(SPLIT_COLUMN).agg((pl.col("churn") == "Yes").mean().alias("pos"), pl.len())
    overall = (typed.get_column("churn") == "Yes").mean()
    for row in shares.iter_rows(named=True):
        assert abs(row["pos"] - overall) < 0.01
    sizes = dict(shares.select(SPLIT_COLUMN, "len").rows())
    assert abs(sizes["test"] / typed.height - telco_spec.split.test) < 0.005
    assert abs(sizes["validation"] / typed.height - telco_spec.split.validation) < 0.005


def test_time_split_puts_the_latest_rows_in_test(orders_spec):
    typed = clean(read_source(orders_spec), orders_spec)
    split = assign_splits(typed, orders_spec)
    by = {s: split.filter(pl.col(SPLIT_COLUMN) == s).get_column("ordered_at") for s in SPLITS}
    assert by["train"].max() <= by["validation"].min()
    assert by["validation"].max() <= by["test"].min()


def test_frame_digest_changes_with_one_cell(orders_spec):
    raw = _orders(orders_spec)
    changed = raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("31")).otherwise(pl.col("amount_eur")).alias("amount_eur")
    )
    assert frame_digest(raw) == frame_digest(raw.clone())
    assert frame_digest(raw) != frame_digest(changed)


def test_tolerance_names_the_top_failing_checks():
    report = QuarantineReport(
        path="q.parquet",
        rows_in=100,
        rows_quarantined=10,
        max_fraction=0.05,
        top_checks=[FailingCheck(column="age", check="in_range(0, 120)", rows=8, example="-3")],
    )
    with pytest.raises(
        QuarantineToleranceExceeded, match=r"10 of 100 rows \(10.0%\).*age in_range\(0, 120\): 8 rows.*q.parquet"
    ):
        check_tolerance(report)
    check_tolerance(report.model_copy(update={"max_fraction": 0.1}))


# -- exact duplicate rows: a declared policy, and never on both sides of the split ---------------
def with_copies(raw: pl.DataFrame, share: float = 0.1, seed: int = 3) -> tuple[pl.DataFrame, dict[int, int]]:
    """`raw`'s distinct rows with `share` of them copied in at random places; copy row → its first copy's row."""
    distinct = raw.unique(maintain_order=True)
    copies = distinct.sample(fraction=share, seed=seed)
    mixed = pl.concat([distinct, copies]).sample(fraction=1.0, shuffle=True, seed=seed).with_row_index("_r")
    first = mixed.with_columns(pl.col("_r").min().over(raw.columns).alias("_first"))
    later = first.filter(pl.col("_r") != pl.col("_first"))
    return mixed.drop("_r"), dict(later.select(pl.col("_r").cast(pl.Int64), pl.col("_first").cast(pl.Int64)).rows())


def _straddling(split: pl.DataFrame) -> int:
    """Rows that also appear (all columns equal) in another split."""
    columns = [c for c in split.columns if c != SPLIT_COLUMN]
    return split.filter(pl.col(SPLIT_COLUMN).n_unique().over(columns) > 1).height


def _policy(spec, duplicates: str):
    return spec.model_copy(update={"quarantine": QuarantineSpec(max_fraction=0.2, duplicates=duplicates)})


@pytest.mark.parametrize("policy", ["quarantine", "drop", "keep"])
def test_a_file_with_ten_percent_copies_gets_its_declared_outcome(telco_spec, telco_raw, policy):
    raw, copies = with_copies(telco_raw)
    spec = _policy(telco_spec, policy)
    assert len(copies) == round(0.1 * telco_raw.unique().height) and find_duplicates(raw).height == len(copies)

    failures, dropped = duplicates_policy(find_failures(raw, spec), find_duplicates(raw), spec)
    kept, quarantined = split_quarantine(raw, failures, dropped)
    assert kept.height + quarantined.height + dropped.len() == raw.height  # nothing lost
    if policy == "quarantine":
        assert dict(zip(quarantined["source_row"], quarantined["reason"], strict=True)) == {
            row: f"duplicate of row {first}" for row, first in copies.items()
        }
        assert quarantined.get_column("failed_column").unique().to_list() == ["(all columns)"]
        assert dropped.len() == 0 and kept.equals(raw.unique(maintain_order=True))
    elif policy == "drop":
        assert sorted(dropped) == sorted(copies) and quarantined.height == 0
        assert kept.equals(raw.unique(maintain_order=True))
    else:
        assert kept.equals(raw) and quarantined.height == 0 and dropped.len() == 0
    split = assign_splits(add_features(clean(kept, spec), spec), spec)
    assert _straddling(split) == 0  # no row in test is also in train or validation


def test_copies_take_the_split_of_their_first_copy_and_the_rest_keep_theirs(telco_spec, telco_raw):
    from tasks.core.prepare import _positional_splits

    typed = add_features(clean(telco_raw, telco_spec), telco_spec)
    positional, split = _positional_splits(typed, telco_spec), assign_splits(typed, telco_spec)
    assert _straddling(positional) == 27 and _straddling(split) == 0  # the bundled table's 22 copies
    moved = positional.get_column(SPLIT_COLUMN) != split.get_column(SPLIT_COLUMN)
    has_copy = typed.is_duplicated()
    assert moved.sum() == 13 and not (moved & ~has_copy).any()  # only copies move
    distinct = typed.unique(maintain_order=True)  # no copies: the split is the positional one, unchanged
    assert assign_splits(distinct, telco_spec).equals(_positional_splits(distinct, telco_spec))


def test_copies_stay_together_in_a_time_split(orders_spec):
    from tasks.core.prepare import _positional_splits

    typed = clean(read_source(orders_spec), orders_spec).drop(orders_spec.id_column)
    doubled = pl.concat([typed, typed.sort("ordered_at").slice(140, 21)])  # a copy pair at the 60% boundary
    spec = orders_spec.model_copy(update={"id_column": None})
    assert _straddling(_positional_splits(doubled, spec)) == 2
    split = assign_splits(doubled, spec)
    assert _straddling(split) == 0 and split.height == doubled.height


def test_duplicates_policy_keeps_the_other_failures_of_a_copy(orders_spec):
    raw = _orders(orders_spec, order_id=["a", "b", "a"], items=["1", "x", "1"])
    raw = raw.with_columns(*(pl.lit(raw.item(0, c)).alias(c) for c in ("ordered_at", "amount_eur", "channel")))
    raw = raw.with_columns(*(pl.lit(raw.item(0, c)).alias(c) for c in ("express", "coupon", "note", "outcome")))
    failures, _ = duplicates_policy(find_failures(raw, orders_spec), find_duplicates(raw), orders_spec)
    _, quarantined = split_quarantine(raw, failures)
    by_row = {r["source_row"]: r for r in quarantined.iter_rows(named=True)}
    assert by_row[2]["reason"] == "duplicate of row 0"  # the copy's first reason; its id clash is listed too
    assert any("field_uniqueness" in reason for reason in by_row[2]["all_reasons"])
    assert by_row[1]["reason"].startswith("items: dtype(int)")


# -- what a model needs of the kept rows ---------------------------------------------------------
def test_a_one_class_or_one_row_source_fails_naming_the_file(telco_spec, telco_raw):
    typed = clean(telco_raw, telco_spec)
    one_class = typed.filter(pl.col("churn") == "No")
    with pytest.raises(DataError, match=r"data.csv: the kept rows have only one class of `churn` \('No': 5174 rows\)"):
        check_trainable("data.csv", telco_spec, target_classes(one_class, telco_spec), True)
    same = pl.concat([typed.head(1)] * 1000)
    with pytest.raises(DataError, match="only one class"):  # one row a million times: one class first
        check_trainable("data.csv", telco_spec, target_classes(same, telco_spec), features_vary(same, telco_spec))
    both = pl.concat([same, same.with_columns(pl.lit("Yes").alias("churn"))])
    assert not features_vary(both, telco_spec)
    with pytest.raises(DataError, match="data.csv: all 2000 kept rows have the same feature values"):
        check_trainable("data.csv", telco_spec, target_classes(both, telco_spec), features_vary(both, telco_spec))
    with pytest.raises(DataError, match="data.csv: no rows kept"):
        check_trainable("data.csv", telco_spec, {}, False)
    check_trainable("data.csv", telco_spec, target_classes(typed, telco_spec), features_vary(typed, telco_spec))


# -- the one-pass verdict (schema_holds) and Pandera agree on every frame ---------------------
_CELLS = {
    "order_id": ["a", "b", "a", None, " b"],
    "ordered_at": ["2025-01-01T00:00:00", "yesterday", None],
    "amount_eur": ["10.5", "0", "5000", "5000.01", "-1", "nan", "inf", "abc", None],
    "items": ["1", "50", "0", "51", "2.5", "3.0", None],
    "channel": ["web", "app", " store", "fax", None],
    "express": ["true", "0", "maybe", None],
    "coupon": ["VIP", "NONE", "vip", None],
    "note": ["x", None],
    "outcome": ["kept", "returned", "lost", None],
}


def _drawn_frame(data_) -> pl.DataFrame:
    """1–6 rows of text cells, each drawn from its column's `_CELLS`."""
    rows = data_.draw(st.integers(1, 6))
    return pl.DataFrame(
        {k: [data_.draw(st.sampled_from(v)) for _ in range(rows)] for k, v in _CELLS.items()},
        schema={k: pl.String for k in _CELLS},
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_one_pass_verdict_matches_pandera(orders_spec, data_):
    from tasks.core.cast import cast_to_spec
    from tasks.core.schema import schema_failures, schema_holds

    frame = _drawn_frame(data_)
    typed, _ = cast_to_spec(frame, orders_spec)
    assert schema_holds(typed, orders_spec) == schema_failures(typed, orders_spec).is_empty(), frame.to_dicts()
    features = orders_spec.base_features  # the subset serving checks
    typed_features, _ = cast_to_spec(frame, orders_spec, features)
    assert (
        schema_holds(typed_features, orders_spec, features)
        == schema_failures(typed_features, orders_spec, features).is_empty()
    )


def test_one_pass_verdict_matches_pandera_on_every_planted_corruption(telco_spec, telco_raw):
    from tasks.core.cast import cast_to_spec
    from tasks.core.schema import schema_failures, schema_holds
    from tests.corruption import corrupt_telco

    corruption = corrupt_telco(telco_raw)
    spec = telco_spec.model_copy(update={"id_column": "customer_id"})
    for row in sorted(corruption.broken):
        typed, _ = cast_to_spec(corruption.frame[[0, 1, row]], spec)
        assert schema_holds(typed, spec) == schema_failures(typed, spec).is_empty(), corruption.broken[row]
    typed, _ = cast_to_spec(telco_raw, telco_spec)
    assert schema_holds(typed, telco_spec) and schema_failures(typed, telco_spec).is_empty()


# -- bulk scoring's one-pass path (typed_and_encoded) answers as the two-step path does --------------
def _two_step(frame: pl.DataFrame, spec):
    from tasks.core.features import feature_matrix
    from tasks.core.schema import typed_with_failures

    typed, failures = typed_with_failures(frame, spec, spec.base_features)
    return typed, failures, (feature_matrix(typed, spec) if failures.is_empty() else None)


def _padded_category(frame: pl.DataFrame, spec) -> bool:
    """Whether a category value has surrounding spaces (the two-step path trims it; the one-pass
    path leaves such a file to it)."""
    texts = [frame.get_column(c).cast(pl.String) for c in spec.categorical_features]
    return any(bool((text != text.str.strip_chars()).any()) for text in texts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_one_pass_bulk_path_answers_as_the_two_step_path(orders_spec, data_):
    from tasks.core.schema import typed_and_encoded

    frame = _drawn_frame(data_)
    typed, failures, matrix = _two_step(frame, orders_spec)
    fast = typed_and_encoded(frame, orders_spec)
    if fast is None:  # sound, not complete: it leaves a padded category value to the two-step path
        assert not failures.is_empty() or _padded_category(frame, orders_spec), frame.to_dicts()
    else:
        assert failures.is_empty(), frame.to_dicts()
        assert as_text(fast[0]).equals(typed) and fast[1].flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(fast[1], matrix)


def test_one_pass_bulk_path_on_the_telco_table_and_its_planted_corruptions(telco_spec, telco_raw):
    from tasks.core.features import category_enum
    from tasks.core.schema import typed_and_encoded
    from tests.corruption import corrupt_telco

    typed, failures, matrix = _two_step(telco_raw, telco_spec)
    fast = typed_and_encoded(telco_raw, telco_spec)
    assert failures.is_empty() and fast is not None and as_text(fast[0]).equals(typed)
    assert [fast[0].schema[c] for c in telco_spec.categorical_features] == [
        category_enum(telco_spec, c) for c in telco_spec.categorical_features
    ]  # the codes are kept for the log
    np.testing.assert_array_equal(fast[1], matrix)
    corruption = corrupt_telco(telco_raw)
    for row in sorted(corruption.broken):
        rows = corruption.frame[[0, 1, row]]
        if not _two_step(rows, telco_spec)[1].is_empty():  # a corruption of a feature column
            assert typed_and_encoded(rows, telco_spec) is None, corruption.broken[row]
    # a nullable number that does not parse is a failure (a type loss), not a null
    unparseable = telco_raw.head(3).with_columns(pl.col("total_charges").cast(pl.String).fill_null("0"))
    unparseable = unparseable.with_columns(
        pl.when(pl.int_range(3) == 1).then(pl.lit("12,5")).otherwise(pl.col("total_charges")).alias("total_charges")
    )
    assert not _two_step(unparseable, telco_spec)[1].is_empty() and typed_and_encoded(unparseable, telco_spec) is None


# -- one meaning per input: a column named twice; NaN named as what it is ------------------------------
def test_a_duplicated_header_fails_prepare_naming_the_column_and_the_file(tmp_path, telco_spec):
    """An extra `tenure` placed first used to become the model's `tenure` (Polars renames the later one)."""
    from tasks.stream import scan_source

    lines = telco_spec.resolve(telco_spec.source.path).read_text().splitlines()
    source = tmp_path / "telco_twice.csv"
    source.write_text("\n".join([f"tenure,{lines[0]}", *(f"99,{line}" for line in lines[1:])]) + "\n")
    position = lines[0].split(",").index("tenure") + 2
    message = rf"{source}: the column 'tenure' is in the header 2 times \(columns \[1, {position}\]\)"
    with pytest.raises(DataError, match=message):
        read_source(telco_spec.with_source(source))
    with pytest.raises(DataError, match=message):
        scan_source(telco_spec.with_source(source))


@pytest.mark.parametrize(("column", "value"), [("amount_eur", "NaN"), ("amount_eur", "-inf"), ("items", "nan")])
def test_a_nan_or_infinite_number_is_named_as_such_not_as_out_of_range(orders_spec, column, value):
    from tasks.core.records import example_record, record_model

    raw = _orders(orders_spec, **{column: ["1", value, "3"]})
    failures = find_failures(raw, orders_spec)
    assert failures.rows() == [(1, column, "finite_number", value)]  # was in_range(0.0, 5000.0) for NaN
    parquet_nan = raw.with_columns(pl.col("amount_eur").cast(pl.Float64, strict=False))  # a real NaN value
    if column == "amount_eur":
        assert find_failures(parquet_nan, orders_spec).select("row", "column", "check").rows() == [
            (1, "amount_eur", "finite_number")
        ]
    body = json.dumps(example_record(orders_spec) | {column: float(value)}).encode()  # NaN/Infinity as JS writes them
    with pytest.raises(ValueError) as refused:
        record_model(orders_spec).model_validate_json(body)
    assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [((column,), "finite_number")]
    assert "not NaN or infinity" in str(refused.value)
