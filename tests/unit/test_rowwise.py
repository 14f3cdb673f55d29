"""The row encoder (single-record serving) equals the Polars feature path (training, bulk scoring):
a property test over every op, nulls, category types and edge values."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.features import feature_matrix, row_encoder
from tasks.core.ops import OPS
from tasks.core.records import record_model, records_frame
from tasks.core.spec import DatasetSpec

NUMERIC = ["a_int", "b_float", "c_float", "d_int_nullable"]
SPEC = DatasetSpec.model_validate(
    {
        "name": "rowwise",
        "source": {"path": "unused.csv"},
        "target": {"column": "y", "positive": "1", "labels": ["0", "1"]},
        "columns": {
            "a_int": {"type": "int", "nullable": True},
            "b_float": {"type": "float", "nullable": True},
            "c_float": {"type": "float"},
            "d_int_nullable": {"type": "int", "nullable": True, "min": -5, "max": 5},
            "flag": {"type": "bool", "nullable": True},
            "text_cat": {"type": "category", "categories": ["x", "y", "z", "10"], "nullable": True},
            "int_cat": {"type": "int", "categories": [3, 1, 2]},  # a number restricted to values, not a code
            "float_cat": {"type": "float", "categories": [0.5, 1.0, 2.5], "nullable": True},
            "note": {"type": "string", "feature": False, "nullable": True},
        },
        "derived_features": [
            {"name": f"{op}_{'_'.join(inputs)}", "op": op, "inputs": inputs}
            for op, spec in OPS.items()
            for inputs in (
                [NUMERIC[:2], NUMERIC[1:3], NUMERIC[2:], ["d_int_nullable", "a_int"]]
                if spec.arity == 2
                else [[c] for c in NUMERIC]
            )
        ],
    }
)
Record = record_model(SPEC)

EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, -1.0 + 1e-16, -0.9999999999, 1e-308, 5e-324, -1e-308, 1e308, -1e308, 2.0**53]
EDGE_INTS = [0, 1, -1, -2, 2**53 + 1, 2**62, -(2**63), 2**63 - 1]
floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=False, allow_infinity=False))
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(min_value=-(2**63), max_value=2**63 - 1))


def nullable(strategy):
    return st.one_of(st.none(), strategy)


records = st.fixed_dictionaries(
    {
        "a_int": nullable(ints),
        "b_float": nullable(floats),
        "c_float": floats,
        "d_int_nullable": nullable(st.integers(-5, 5)),
        "flag": nullable(st.booleans()),
        "text_cat": nullable(st.sampled_from(["x", "y", "z", "10", 10])),
        "int_cat": st.sampled_from([3, 1, 2]),
        "float_cat": nullable(st.sampled_from([0.5, 1, 1.0, 2.5])),
        "note": nullable(st.text(max_size=5)),
    }
)


def polars_row(record: dict) -> np.ndarray:
    return feature_matrix(records_frame([record], SPEC), SPEC)[0]


@settings(max_examples=600, deadline=None)
@given(records)
def test_row_encoder_equals_the_polars_path(raw):
    record = Record.model_validate(raw).model_dump()  # what the service holds after validation
    expected = polars_row(record)
    got = np.array(row_encoder(SPEC)(record))
    assert got.shape == expected.shape == (len(SPEC.feature_names),)
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), {SPEC.feature_names[i]: (got[i], expected[i]) for i in np.flatnonzero(~same)}


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=20))
def test_a_batch_of_rows_equals_the_polars_frame(raws):
    rows = [Record.model_validate(r).model_dump() for r in raws]
    expected = feature_matrix(records_frame(rows, SPEC), SPEC)
    got = np.array([row_encoder(SPEC)(r) for r in rows])
    np.testing.assert_array_equal(got, expected)


def test_every_op_is_covered_and_a_null_input_gives_nan():
    assert {d.op for d in SPEC.derived_features} == set(OPS)
    record = Record.model_validate({"c_float": 2.0, "int_cat": 3}).model_dump()
    encoded = dict(zip(SPEC.feature_names, row_encoder(SPEC)(record), strict=True))
    assert math.isnan(encoded["ratio_a_int_b_float"]) and encoded["log1p_c_float"] == math.log1p(2.0)
    assert encoded["int_cat"] == 3.0 and math.isnan(encoded["text_cat"])
    np.testing.assert_array_equal(np.array(list(encoded.values())), polars_row(record))
