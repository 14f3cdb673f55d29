"""Delayed labels and the served window, on small in-memory frames; prediction drift on real Evidently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tasks.core.feedback import (
    ServedWindow,
    join_labels,
    label_coverage,
    latest_labels,
    new_prediction_ids,
    unmatched_labels,
    validate_labels,
    window_bounds,
    window_rows,
)
from tasks.core.monitoring import decide, null_rates
from tasks.core.records import label_model
from tasks.core.spec import DriftPolicy
from tasks.retrain import labelled_batch, served_as_source
from tasks.stores.evidently import check_prediction_drift
from tasks.stores.served import append_labels, read_labels

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _log(n: int, version: str, start: float, prefix: str = "p") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "prediction_id": [f"{prefix}{i}" for i in range(n)],
            "order_id": [f"O-{prefix}{i}" for i in range(n)],
            "logged_at": [start + i for i in range(n)],
            "model_version": [version] * n,
            "probability": np.linspace(0.1, 0.9, n),
        }
    )


def _labels(**cols) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    return pl.DataFrame(cols, schema={k: pl.String for k in cols}).with_columns(
        pl.lit(None, pl.String).alias(k) for k in ("prediction_id", "order_id", "outcome") if k not in cols
    )[:n]


# -- labels in ---------------------------------------------------------------------------------
def test_bad_labels_are_quarantined_with_reasons_and_nothing_is_lost(orders_spec):
    raw = _labels(
        prediction_id=["a", "", None, "d", "e", "f"],
        order_id=[None, "O-1", None, None, None, None],
        outcome=["kept", " returned ", "kept", "maybe", None, "kept"],
        observed_at=["2026-12-01T10:00:00", "1764583200", None, None, None, "yesterday"],
    )
    kept, quarantined = validate_labels(raw, orders_spec, "labels.csv", NOW.timestamp())
    assert kept.height + quarantined.height == raw.height
    assert kept.get_column("label").to_list() == ["kept", "returned"]
    assert kept.get_column("id").to_list() == [None, "O-1"]
    assert kept.get_column("observed_at").to_list() == [datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp(), 1764583200]
    reasons = quarantined.get_column("reason").to_list()
    assert reasons[0] == "no prediction_id or order_id"
    assert reasons[1] == "outcome: not one of ['kept', 'returned'] (value=maybe)"
    assert reasons[2] == "outcome: missing" and reasons[3].startswith("observed_at: not a time")


def test_a_label_file_without_a_key_or_a_label_column_is_refused(orders_spec):
    with pytest.raises(ValueError, match="prediction_id.*order_id"):
        validate_labels(pl.DataFrame({"outcome": ["kept"]}), orders_spec, "f.csv", 0.0)
    with pytest.raises(ValueError, match="outcome"):
        validate_labels(pl.DataFrame({"prediction_id": ["a"]}), orders_spec, "f.csv", 0.0)


def test_the_feedback_request_takes_what_a_label_file_takes(orders_spec):
    label = label_model(orders_spec)
    assert label(order_id="O-1", label="kept").label == "kept"
    for bad in (
        {"label": "kept"},
        {"prediction_id": "a", "label": "maybe"},
        {"prediction_id": "a", "label": "kept", "x": 1},
    ):
        with pytest.raises(ValueError):
            label(**bad)


def test_numeric_labels_keep_the_targets_contract_on_both_paths_and_read_back_as_numbers(diamonds_spec, tmp_path):
    """A regression target (price, min 0): a file's text that is not a finite number within the bounds
    is quarantined with its reason; `/feedback`'s label model refuses the same values, naming `label`.
    Kept labels are stored as their text and read back typed: rows in = kept + quarantined."""
    texts = ["326", " 18823.5 ", "1e3", "abc", "NaN", "inf", "-1", "", "1,000"]
    raw = pl.DataFrame({"prediction_id": [f"p{i}" for i in range(len(texts))], "price": texts})
    kept, quarantined = validate_labels(raw, diamonds_spec, "labels.csv", NOW.timestamp())
    assert kept.height + quarantined.height == raw.height
    assert kept.get_column("label").to_list() == ["326", "18823.5", "1e3"]
    assert quarantined.get_column("reason").to_list() == [
        "price: not a number (value=abc)",
        "price: not a finite number (NaN or infinity) (value=NaN)",
        "price: not a finite number (NaN or infinity) (value=inf)",
        "price: below the target's min 0 (value=-1)",
        "price: missing",
        "price: not a number (value=1,000)",
    ]
    label = label_model(diamonds_spec)
    assert [label(prediction_id="a", label=v).label for v in (326, 18823.5)] == [326.0, 18823.5]
    for bad, error in (("326", "float_type"), (float("nan"), "finite_number"), (float("inf"), "finite_number"),
                       (-1, "greater_than_equal"), (True, "value_error"), (None, "float_type")):  # fmt: skip
        with pytest.raises(ValueError) as refused:
            label(prediction_id="a", label=bad)
        assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [(("label",), error)]
    append_labels(tmp_path, kept)
    served = pl.DataFrame({"prediction_id": ["p0", "p1", "p2", "p9"], "logged_at": [1.0] * 4})
    joined = join_labels(served, read_labels(tmp_path), diamonds_spec)
    assert joined.schema["price"] == pl.Float64 and joined.get_column("price").to_list() == [326, 18823.5, 1000, None]


def test_the_latest_label_for_a_key_wins(orders_spec):
    raw = _labels(prediction_id=["a", "a", "b"], outcome=["kept", "returned", "kept"], observed_at=["10", "20", "5"])
    kept, _ = validate_labels(raw, orders_spec, "f.csv", 100.0)
    later, _ = validate_labels(_labels(prediction_id=["b"], outcome=["returned"]), orders_spec, "g.csv", 200.0)
    latest = latest_labels(pl.concat([kept, later]))
    assert dict(latest.select("prediction_id", "label").iter_rows()) == {"a": "returned", "b": "returned"}


def test_the_label_store_keeps_every_part(tmp_path, orders_spec):
    for outcome in ("kept", "returned"):
        kept, _ = validate_labels(_labels(prediction_id=["a"], outcome=[outcome]), orders_spec, "f.csv", 1.0)
        append_labels(tmp_path, kept)
    assert read_labels(tmp_path).height == 2 and read_labels(tmp_path / "none").height == 0


# -- the window ---------------------------------------------------------------------------------
def test_the_window_holds_only_the_champions_rows_inside_it():
    start = NOW.timestamp() - 100
    log = pl.concat([_log(50, "1", start, "old"), _log(30, "2", start + 10, "new"), _log(5, "2", start - 10**6, "x")])
    duration = ServedWindow(model_version="2", start=NOW - timedelta(days=1), end=NOW)
    rows = window_rows(log, duration)
    assert rows.height == 30 and set(rows.get_column("model_version")) == {"2"}
    first, end = window_bounds("10rows", log.filter(pl.col("model_version") == "2").get_column("logged_at"), NOW)
    last_ten = window_rows(log, ServedWindow(model_version="2", start=first, end=end))
    assert last_ten.get_column("prediction_id").to_list() == [f"new{i}" for i in range(20, 30)]
    assert window_bounds("7d", log.get_column("logged_at"), NOW)[0] == NOW - timedelta(days=7)
    with pytest.raises(ValueError, match="7d"):
        window_bounds("a week", log.get_column("logged_at"), NOW)
    with pytest.raises(ValueError):
        DriftPolicy(window="7 days")


def test_labels_join_by_prediction_id_then_by_id_and_unknown_keys_are_counted(orders_spec):
    log = _log(4, "1", 1000.0)
    raw = _labels(
        prediction_id=["p0", None, "ghost", None],
        order_id=[None, "O-p1", None, "O-nobody"],
        outcome=["kept", "returned", "kept", "kept"],
        observed_at=["1100", "1061", None, None],
    )
    labels, _ = validate_labels(raw, orders_spec, "f.csv", 5000.0)
    joined = join_labels(log, labels, orders_spec)
    assert joined.get_column("outcome").to_list() == ["kept", "returned", None, None]
    assert joined.get_column("label_delay_seconds").to_list()[:2] == [100.0, 60.0]
    unmatched = unmatched_labels(labels, log.select("prediction_id", "order_id"), orders_spec)
    assert unmatched == 2
    coverage = label_coverage(joined, orders_spec, unmatched)
    assert (coverage.rows, coverage.labelled, coverage.share, coverage.median_delay_seconds) == (4, 2, 0.5, 80.0)


def test_served_rows_become_training_rows_with_their_labels(orders_spec):
    log = _log(3, "1", datetime(2026, 1, 1, tzinfo=UTC).timestamp()).with_columns(
        amount_eur=pl.lit(12.5), items=pl.lit(2), channel=pl.lit("web"), express=pl.lit(True),
        coupon=pl.lit(None, pl.String),
    )  # fmt: skip
    labels, _ = validate_labels(_labels(prediction_id=["p0", "p2"], outcome=["kept", "returned"]), orders_spec, "f", 0)
    raw, checked = served_as_source(join_labels(log, labels, orders_spec), orders_spec)
    assert raw.columns == orders_spec.input_columns and "note" not in checked
    rows, unlabelled, quarantined, _ = labelled_batch(raw, orders_spec, checked)
    assert (rows.height, unlabelled, quarantined.height) == (2, 1, 0)
    assert rows.get_column("ordered_at").to_list()[0] == datetime(2026, 1, 1)
    assert "note" not in rows.columns  # sensitive: never logged, never read, never learnt


# -- what is watched ---------------------------------------------------------------------------
def test_a_feature_whose_nulls_grew_is_drift():
    policy = DriftPolicy(max_null_rate_increase=0.1)
    reference = pl.DataFrame({"a": [1.0] * 100, "b": [1.0] * 95 + [None] * 5})
    current = pl.DataFrame({"a": [1.0] * 98 + [None] * 2, "b": [1.0] * 70 + [None] * 30})
    rates = null_rates(reference, current, ["a", "b"], policy)
    assert [r.drifted for r in rates] == [False, True] and rates[1].current == pytest.approx(0.3)
    status, reasons = decide(300, 0.0, policy, nulls=rates)
    assert status == "drift" and reasons == ["b: 30.0% nulls, was 5.0% (policy: +10%)"]


def test_prediction_drift_fires_when_served_probabilities_move_and_stays_quiet_on_like_traffic(tmp_path):
    rng = np.random.default_rng(7)
    policy = DriftPolicy()
    reference = pl.Series(rng.beta(1.2, 3.0, 1400))
    args = (policy, tmp_path / "report.html", tmp_path / "workspace", "orders")
    for seed in range(3):
        like = check_prediction_drift(reference, pl.Series(np.random.default_rng(seed).beta(1.2, 3.0, 1000)), *args)
        assert not like.drifted and like.score < policy.prediction_threshold / 2, like
        assert decide(1000, 0.0, policy, prediction=like)[0] == "no_drift"
    moved = check_prediction_drift(reference, pl.Series("probability", rng.beta(2.5, 2.5, 1000)), *args)
    assert moved.drifted and moved.method.lower() == "psi" and moved.score > policy.prediction_threshold
    status, reasons = decide(1000, 0.0, policy, prediction=moved)
    assert status == "drift" and "served probability moved" in reasons[0]
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_new_prediction_ids_are_distinct_hex_with_a_fresh_random_prefix_a_call():
    ids, again = new_prediction_ids(50_000), new_prediction_ids(3)
    assert ids.dtype == pl.String and ids.name == "prediction_id" and ids.n_unique() == 50_000
    assert ids.str.contains("^[0-9a-f]{32}$").all()
    assert ids.str.slice(0, 22).n_unique() == 1 and ids[0][:22] != again[0][:22]
    assert ids[12_345].endswith("0000012345") and ids.str.slice(22).cast(pl.Int64).to_list() == list(range(50_000))


@pytest.mark.parametrize("key", ["a\x00b", "a\nb", "\x07", "a\u200bb", "a\u2028b"])
def test_an_id_with_a_character_that_is_not_printable_is_refused_naming_the_field(orders_spec, key):
    """A NUL byte (or a line break, a zero-width space...) in an id: 400 on /feedback, quarantined in a file."""
    label = label_model(orders_spec)
    for field in ("prediction_id", "order_id"):
        with pytest.raises(ValueError) as refused:
            label(**{field: key, "label": "kept"})
        assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [((field,), "printable")]
    assert label(prediction_id="ok id-1", label="kept").prediction_id == "ok id-1"  # a plain space is printable
    raw = _labels(prediction_id=[key, "fine", None], order_id=[None, None, key], outcome=["kept"] * 3)
    kept, quarantined = validate_labels(raw, orders_spec, "labels.csv", NOW.timestamp())
    assert kept.get_column("prediction_id").to_list() == ["fine"]
    reasons = quarantined.get_column("reason").to_list()
    assert [r.split(":")[0] for r in reasons] == ["prediction_id", "order_id"]
    assert all("not printable" in r for r in reasons)


def test_a_label_from_the_future_is_refused_on_both_paths_and_cannot_beat_a_later_correction(orders_spec):
    """The one rule (`observed_in_future`): past 5 minutes of clock skew, 400 naming `observed_at` at
    /feedback, quarantined in a label file. Within the allowance it is taken."""
    label, now = label_model(orders_spec), datetime.now(UTC)
    with pytest.raises(ValueError) as refused:
        label(prediction_id="a", label="kept", observed_at="2030-01-01T00:00:00")
    assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [(("observed_at",), "in_the_future")]
    assert label(prediction_id="a", label="kept", observed_at=now + timedelta(seconds=120)).observed_at
    assert label(prediction_id="a", label="kept", observed_at="2026-01-01T00:00:00").observed_at.tzinfo == UTC

    raw = _labels(
        prediction_id=["a", "b"], outcome=["kept", "kept"], observed_at=["2030-01-01", "2030-01-01T00:00:00Z"]
    )
    kept, quarantined = validate_labels(raw, orders_spec, "labels.csv", NOW.timestamp())
    assert kept.height == 0 and quarantined.get_column("reason").to_list() == [
        f"observed_at: in the future (more than 300 s after it was received) (value={v})" for v in raw["observed_at"]
    ]
    skewed, _ = validate_labels(
        _labels(prediction_id=["a"], outcome=["kept"], observed_at=[str(NOW.timestamp() + 299)]),
        orders_spec, "labels.csv", NOW.timestamp(),
    )  # fmt: skip
    correction, _ = validate_labels(
        _labels(prediction_id=["a"], outcome=["returned"], observed_at=[(NOW + timedelta(hours=1)).isoformat()]),
        orders_spec, "later.csv", (NOW + timedelta(hours=1)).timestamp(),
    )  # fmt: skip
    assert latest_labels(pl.concat([skewed, correction])).get_column("label").to_list() == ["returned"]
