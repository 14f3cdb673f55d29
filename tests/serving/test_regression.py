"""A regression champion (diamond prices, the bundled sample) served by a real `bentoml serve`: a
predicted value and its interval on every endpoint, served = registered (compiled and booster),
the interval's coverage on the test split, numeric labels, NaN/inf refused."""

from __future__ import annotations

import io
import json
import math

import httpx
import numpy as np
import polars as pl
import pytest

from tasks.stores import registry
from tasks.stores.served import read_labels
from tasks.stores.snapshots import read_split
from tests.serving.server import assert_served_as_registered, bento_server, logged_rows

NOMINAL = 0.9  # configs/diamonds.yaml: evaluation.interval_coverage


def _test_split(server) -> pl.DataFrame:
    return read_split(server["result"].prepare.manifest_path, "test")


def _records(server, n: int) -> list[dict]:
    return _test_split(server).select(server["spec"].base_features).head(n).to_dicts()


def _post(url: str, path: str, payload, **kw) -> httpx.Response:
    return httpx.post(f"{url}/{path}", json=payload, timeout=60, **kw)


def _halfwidth(url: str) -> float:
    info = _post(url, "model_info", {}).json()
    assert info["task"] == "regression" and info["interval"]["coverage"] == NOMINAL, info
    return info["interval"]["halfwidth"]


def _registered(server):
    spec = server["spec"]
    cfg = registry.default_tracking(server["workdir"], spec.name, spec.registered_model_name)
    return registry.load_model(cfg, f"models:/{spec.registered_model_name}@champion")


def test_predict_answers_a_value_and_its_interval_as_the_registered_model(diamonds_server):
    url, result = diamonds_server["url"], diamonds_server["result"]
    records = _records(diamonds_server, 50)
    response = _post(url, "predict", {"records": records})
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert all(list(a) == ["prediction_id", "prediction", "interval", "model_version"] for a in answers), answers[0]
    assert {a["model_version"] for a in answers} == {result.registry.champion_version}
    halfwidth = _halfwidth(url)
    assert halfwidth > 0
    offline = _registered(diamonds_server).predict_frame(pl.DataFrame(records))
    value = np.array([a["prediction"] for a in answers])
    np.testing.assert_allclose(value, offline.get_column("prediction").to_numpy(), rtol=0, atol=1e-9)
    assert [a["interval"] for a in answers] == [{"low": v - halfwidth, "high": v + halfwidth} for v in value.tolist()]
    batched = _post(url, "predict_batched", {"records": records[:5]})
    assert batched.status_code == 200, batched.text
    assert [{k: v for k, v in a.items() if k != "prediction_id"} for a in batched.json()] == [
        {k: v for k, v in a.items() if k != "prediction_id"} for a in answers[:5]
    ]


def test_every_row_is_served_as_registered_by_the_compiled_model_and_by_the_booster(diamonds_server, tmp_path):
    server, spec = diamonds_server, diamonds_server["spec"]
    manifest = server["result"].prepare.manifest_path
    compared = assert_served_as_registered(server["url"], server["workdir"], manifest, spec)
    assert compared == server["result"].prepare.rows_kept
    env = {"LIFECYCLE_COMPILED": "off", "LIFECYCLE_PREDICTION_LOG_DIR": str(tmp_path / "log")}
    with bento_server(server["result"].package.bento_tag, tmp_path / "booster.log", env) as booster:
        on_booster = assert_served_as_registered(booster, server["workdir"], manifest, spec, "booster", ("test",))
    assert on_booster == _test_split(server).height


def test_the_served_intervals_cover_the_test_prices_as_nominal_within_3_points(diamonds_server):
    test = _test_split(diamonds_server)
    body = io.BytesIO()
    test.select(diamonds_server["spec"].base_features).write_parquet(body)
    parquet = {"content-type": "application/vnd.apache.parquet"}
    response = httpx.post(
        f"{diamonds_server['url']}/v1/score_file", content=body.getvalue(), headers=parquet, timeout=120
    )
    assert response.status_code == 200, response.text
    served = pl.read_parquet(io.BytesIO(response.content)).sort("row")
    price = test.get_column("price").cast(pl.Float64)
    covered = ((served["interval_low"] <= price) & (price <= served["interval_high"])).mean()
    assert abs(covered - NOMINAL) <= 0.03, f"test-split coverage {covered:.3f} of {test.height} rows"


def test_score_file_returns_value_and_interval_columns_and_reasons_for_bad_rows(diamonds_server):
    url, spec = diamonds_server["url"], diamonds_server["spec"]
    raw = _test_split(diamonds_server).select(spec.base_features).head(40).cast(pl.String)
    bad = {2: ("carat", "NaN"), 5: ("depth", "inf"), 9: ("cut", "Flawless"), 12: ("x", "-1")}
    for row, (column, value) in bad.items():
        raw = raw.with_columns(
            pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(column).alias(column)
        )
    buffer = io.BytesIO()
    raw.write_csv(buffer)
    response = httpx.post(f"{url}/v1/score_file", content=buffer.getvalue(), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    scored = pl.read_parquet(io.BytesIO(response.content))
    assert scored.columns == ["row", "prediction_id", "prediction", "interval_low", "interval_high", "reason",
                              "model_version"]  # fmt: skip
    rejected = scored.filter(pl.col("reason").is_not_null())
    assert rejected.get_column("row").to_list() == sorted(bad)
    assert [r.split(":")[0] for r in rejected.get_column("reason")] == [bad[r][0] for r in sorted(bad)]
    assert "finite_number" in rejected.get_column("reason")[0] and "finite_number" in rejected.get_column("reason")[1]
    answer = ["prediction_id", "prediction", "interval_low", "interval_high"]
    assert rejected.select(answer).null_count().row(0) == (4, 4, 4, 4)
    good = scored.filter(pl.col("reason").is_null())
    halfwidth = _halfwidth(url)
    assert (good["interval_high"] - good["prediction"] - halfwidth).abs().max() < 1e-9
    assert response.headers["x-rows-rejected"] == "4"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_nan_or_infinite_feature_gets_400_naming_it(diamonds_server, value):
    record = _records(diamonds_server, 1)[0] | {"carat": value}
    body = json.dumps({"records": [record]}).encode()  # NaN, Infinity: what JavaScript and Python send
    for path in ("predict", "predict_batched", "explain"):
        response = httpx.post(f"{diamonds_server['url']}/{path}", content=body, timeout=30)
        assert response.status_code == 400, (path, response.text)
        detail = response.json()["detail"]
        assert any(d["loc"][-1] == "carat" and d["type"] == "finite_number" for d in detail), (path, detail)


def test_answers_and_their_intervals_are_logged_and_counted(diamonds_server):
    url, spec = diamonds_server["url"], diamonds_server["spec"]
    response = _post(url, "predict", {"records": _records(diamonds_server, 4)}, headers={"x-request-id": "reg-log"})
    answers = response.json()["predictions"]
    mine = logged_rows(diamonds_server["logs"], spec.name, {"reg-log"}, want=4)
    assert mine.get_column("prediction_id").to_list() == [a["prediction_id"] for a in answers]
    assert mine.get_column("prediction").to_list() == [a["prediction"] for a in answers]
    assert mine.get_column("interval_low").to_list() == [a["interval"]["low"] for a in answers]
    assert mine.get_column("interval_high").to_list() == [a["interval"]["high"] for a in answers]
    assert "probability" not in mine.columns and "label" not in mine.columns
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'lifecycle_predictions_total{endpoint="predict",label="prediction"' in metrics


def test_explanations_add_up_to_the_predicted_value_in_dollars(diamonds_server):
    response = _post(diamonds_server["url"], "explain", {"records": _records(diamonds_server, 3), "top_k": 50})
    assert response.status_code == 200, response.text
    for item in response.json():
        assert set(item) == {"prediction", "interval", "base_value", "top"}
        total = item["base_value"] + sum(c["contribution"] for c in item["top"])
        assert total == pytest.approx(item["prediction"], abs=1e-6)


def test_feedback_takes_numeric_labels_and_refuses_others_naming_the_field(diamonds_server):
    url, spec = diamonds_server["url"], diamonds_server["spec"]
    answered = _post(url, "predict", {"records": _records(diamonds_server, 2)}).json()["predictions"]
    labels = [{"prediction_id": answered[0]["prediction_id"], "label": 4321},
              {"prediction_id": answered[1]["prediction_id"], "label": 18823.5}]  # fmt: skip
    response = _post(url, "feedback", {"labels": labels})
    assert response.status_code == 200 and response.json()["stored"] == 2, response.text
    stored = read_labels(diamonds_server["labels"] / spec.name)
    mine = stored.filter(pl.col("prediction_id").is_in([a["prediction_id"] for a in answered]))
    assert sorted(mine.get_column("label").cast(pl.Float64).to_list()) == [4321.0, 18823.5]
    for bad, error in (("4321", "float_type"), ("cheap", "float_type"), (-5, "greater_than_equal"),
                       (True, "value_error"), (None, "float_type")):  # fmt: skip
        refused = _post(url, "feedback", {"labels": [{"prediction_id": "a", "label": bad}]})
        assert refused.status_code == 400, refused.text
        assert [(d["loc"][-1], d["type"]) for d in refused.json()["detail"]] == [("label", error)], refused.text
    for body in (
        b'{"labels": [{"prediction_id": "a", "label": NaN}]}',
        b'{"labels": [{"prediction_id": "a", "label": Infinity}]}',
    ):
        refused = httpx.post(f"{url}/feedback", content=body, headers={"content-type": "application/json"}, timeout=30)
        assert refused.status_code == 400, refused.text
        assert [(d["loc"][-1], d["type"]) for d in refused.json()["detail"]] == [("label", "finite_number")]
