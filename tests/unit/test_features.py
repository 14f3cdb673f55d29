import math

import numpy as np
import polars as pl

from tasks.core import features


def test_derived_features_are_row_wise_and_safe(orders_spec):
    frame = pl.DataFrame({"amount_eur": [10.0, 5.0, None], "items": [2, 0, 1]})
    out = features.add_features(frame, orders_spec)
    assert out.get_column("amount_per_item").to_list() == [5.0, None, None]  # no division by zero
    assert math.isclose(out.get_column("log_amount")[0], math.log1p(10.0))
    assert frame.columns == ["amount_eur", "items"]  # input untouched


def test_encoding_uses_the_config_category_order(orders_spec):
    frame = pl.DataFrame(
        {
            "amount_eur": [10.0, 20.0],
            "items": [1, 2],
            "channel": ["store", "web"],
            "express": [True, False],
            "coupon": [None, "VIP"],
        }
    )
    encoded = features.encode_features(frame, orders_spec)
    assert encoded.columns == orders_spec.feature_names
    assert encoded.get_column("channel").to_list() == [2.0, 0.0]  # [web, app, store]
    assert encoded.get_column("coupon").to_list() == [None, 2.0]
    matrix = features.feature_matrix(frame, orders_spec)
    assert matrix.dtype == np.float64 and np.isnan(matrix[0, 4])


def test_one_record_gets_the_same_features_as_in_a_table(telco_spec, telco_raw):
    from tasks.core.cast import clean

    table = clean(telco_raw.head(50), telco_spec)
    one = clean(telco_raw.slice(17, 1), telco_spec)
    assert np.array_equal(
        features.feature_matrix(table, telco_spec)[17], features.feature_matrix(one, telco_spec)[0], equal_nan=True
    )


def test_target_encoding(telco_spec):
    frame = pl.DataFrame({"churn": ["Yes", "No", "Yes"]})
    assert features.encode_target(frame, telco_spec).tolist() == [1, 0, 1]
