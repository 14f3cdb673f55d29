"""The real service over HTTP: answers, errors, logs, metrics, bulk scoring, fuzzing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest

from tasks.core.spec import load_spec
from tasks.stores import registry
from tasks.stores.served import read_labels
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS, FIXTURES
from tests.serving.server import assert_served_as_registered, bento_server, logged_rows

TELCO = load_spec(CONFIGS / "telco_churn.yaml")


def _records(result, n: int, spec=TELCO) -> list[dict]:
    test = read_split(result.prepare.manifest_path, "test")
    return test.select(spec.base_features).head(n).to_dicts()


def _post(url: str, path: str, payload, **kw) -> httpx.Response:
    return httpx.post(f"{url}/{path}", json=payload, timeout=30, **kw)


def test_prediction_matches_the_registered_mlflow_model(telco_server):
    url, result = telco_server["url"], telco_server["result"]
    records = _records(result, 50)
    response = _post(url, "predict", {"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    cfg = registry.default_tracking(telco_server["workdir"], TELCO.name, TELCO.registered_model_name)
    cfg.activate()
    champion = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion")
    expected = champion.predict(pl.DataFrame(records).to_pandas())
    got = [p["probability"] for p in body["predictions"]]
    assert np.allclose(got, expected["probability"].to_numpy(), rtol=0, atol=1e-12)
    assert [p["label"] for p in body["predictions"]] == expected["label"].tolist()
    assert body["model_version"] == result.registry.champion_version == result.package.model_version
    assert response.headers["x-request-id"] == body["request_id"]


def test_the_whole_table_is_served_as_the_registered_model_scores_it(telco_server):
    result = telco_server["result"]
    compared = assert_served_as_registered(
        telco_server["url"], telco_server["workdir"], result.prepare.manifest_path, TELCO
    )
    assert compared == result.prepare.rows_kept


def test_batched_endpoint_gives_the_same_answer(telco_server):
    url, result = telco_server["url"], telco_server["result"]
    records = _records(result, 5)
    one = _post(url, "predict", {"records": records}).json()["predictions"]
    batched = _post(url, "predict_batched", {"records": records}).json()
    assert [p["probability"] for p in batched] == [p["probability"] for p in one]


def _valid(result) -> dict:
    return _records(result, 1)[0]


BAD_REQUESTS = {
    "missing field": (lambda r: {k: v for k, v in r.items() if k != "tenure"}, "tenure", "missing"),
    "extra field": (lambda r: r | {"shoe_size": 42}, "shoe_size", "extra_forbidden"),
    "wrong type": (lambda r: r | {"tenure": "twelve"}, "tenure", "int_type"),
    "float for an int": (lambda r: r | {"tenure": 1.5}, "tenure", "int_type"),
    "out of range": (lambda r: r | {"monthly_charges": -3.0}, "monthly_charges", "greater_than_equal"),
    "unknown category": (lambda r: r | {"contract": "Three year"}, "contract", "literal_error"),
    "null in a required field": (lambda r: r | {"contract": None}, "contract", "literal_error"),
    "not a number": (lambda r: r | {"monthly_charges": "NaN"}, "monthly_charges", "float_type"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_records_get_400_naming_the_field(telco_server, case):
    change, field, error_type = BAD_REQUESTS[case]
    payload = {"records": [_valid(telco_server["result"]), change(_valid(telco_server["result"]))]}
    response = _post(telco_server["url"], "predict", payload)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][-1] == field and d["loc"][1] == 1 and d["type"] == error_type for d in detail), detail


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"records": [', {"content-type": "application/json"}, 400),  # malformed JSON
        (b'{"records": []}', {"content-type": "application/json"}, 400),  # empty list
        (b"records=1", {"content-type": "application/x-www-form-urlencoded"}, 415),
        (b"--x\r\n", {"content-type": "multipart/form-data"}, 415),
    ],
)
def test_malformed_requests_get_4xx(telco_server, body, headers, status):
    response = httpx.post(f"{telco_server['url']}/predict", content=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_request_size_is_limited_in_rows_and_bytes(telco_server):
    url, record = telco_server["url"], _valid(telco_server["result"])
    too_many = _post(url, "predict", {"records": [record] * 1001})
    assert too_many.status_code == 400 and too_many.json()["detail"][0]["type"] == "too_long"
    huge = json.dumps({"records": [record] * 20_000}).encode()  # > 4 MiB
    response = httpx.post(f"{url}/predict", content=huge, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_every_prediction_is_logged_with_its_model_version(telco_server):
    url, result = telco_server["url"], telco_server["result"]
    response = _post(url, "predict", {"records": _records(result, 7)}, headers={"x-request-id": "req-log-test"})
    assert response.status_code == 200
    mine = logged_rows(telco_server["logs"], TELCO.name, {"req-log-test"}, want=7)
    assert mine.height == 7
    assert set(mine.get_column("model_version")) == {result.package.model_version}
    assert set(TELCO.base_features) <= set(mine.columns)
    assert mine.get_column("probability").is_between(0, 1).all()


def test_every_prediction_gets_an_id_that_is_returned_and_logged(telco_server):
    url, result = telco_server["url"], telco_server["result"]
    response = _post(url, "predict", {"records": _records(result, 6)}, headers={"x-request-id": "req-ids"})
    ids = [p["prediction_id"] for p in response.json()["predictions"]]
    assert len(set(ids)) == 6 and all(len(i) == 32 for i in ids)
    mine = logged_rows(telco_server["logs"], TELCO.name, {"req-ids"}, want=6)
    assert mine.get_column("prediction_id").to_list() == ids


def test_feedback_stores_labels_for_predictions(telco_server, tmp_path):
    url, result = telco_server["url"], telco_server["result"]
    counted = _feedback_counted(url)  # other tests share this server
    # a second server of the same store starting beside it must leave its counters alone
    with bento_server(result.package.bento_tag, tmp_path / "second.log") as second:
        assert _feedback_counted(second) == 0
    answered = _post(url, "predict", {"records": _records(result, 3)}).json()["predictions"]
    labels = [{"prediction_id": p["prediction_id"], "label": "Yes"} for p in answered]
    labels[0] |= {"observed_at": "2026-11-30T08:00:00Z"}
    response = _post(url, "feedback", {"labels": labels}, headers={"x-request-id": "fb-1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"request_id": "fb-1", "stored": 3}
    stored = read_labels(telco_server["labels"] / TELCO.name)  # written before the answer
    mine = stored.filter(pl.col("prediction_id").is_in([p["prediction_id"] for p in answered]))
    assert mine.height == 3 and set(mine.get_column("label")) == {"Yes"} and set(mine["source"]) == {"feedback"}
    assert mine.get_column("observed_at").drop_nulls().to_list() == [1796025600.0]
    assert _feedback_counted(url) == counted + 3


def _feedback_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counted = [line for line in text.splitlines() if line.startswith("lifecycle_feedback_labels_total")]
    return sum(float(line.split()[-1]) for line in counted)


@pytest.mark.parametrize(
    ("labels", "field", "error_type"),
    [
        ([{"prediction_id": "a", "label": "Maybe"}], "label", "literal_error"),
        ([{"label": "Yes"}], None, "value_error"),  # no key
        ([{"prediction_id": "a", "label": "Yes", "churn": "Yes"}], "churn", "extra_forbidden"),
        (
            [{"prediction_id": "a", "label": "Yes", "observed_at": "last week"}],
            "observed_at",
            "datetime_from_date_parsing",
        ),
        (  # a label from the future would beat every later correction: refused
            [{"prediction_id": "a", "label": "Yes", "observed_at": "2030-01-01T00:00:00Z"}],
            "observed_at",
            "in_the_future",
        ),
    ],
)
def test_malformed_feedback_gets_400_naming_the_field(telco_server, labels, field, error_type):
    response = _post(telco_server["url"], "feedback", {"labels": [{"prediction_id": "ok", "label": "No"}, *labels]})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][:2] == ["labels", 1] and d["type"] == error_type for d in detail), detail
    if field:
        assert any(d["loc"][-1] == field for d in detail), detail
    assert _post(telco_server["url"], "feedback", {"labels": []}).status_code == 400


def test_metrics_count_predictions_by_label_and_version(telco_server):
    _post(telco_server["url"], "predict", {"records": _records(telco_server["result"], 3)})
    text = httpx.get(f"{telco_server['url']}/metrics", timeout=10).text
    version = telco_server["result"].package.model_version
    assert f'model_version="{version}"' in text and "lifecycle_predictions_total" in text
    assert "lifecycle_model_seconds_bucket" in text


def test_explanations_add_up_to_the_prediction(telco_server):
    records = _records(telco_server["result"], 3)
    response = _post(telco_server["url"], "explain", {"records": records, "top_k": 30})
    assert response.status_code == 200, response.text
    for item in response.json():
        logit = item["base_value"] + sum(c["contribution"] for c in item["top"])
        assert 1 / (1 + np.exp(-logit)) == pytest.approx(item["probability"], abs=1e-9)


def test_bulk_file_scores_good_rows_and_gives_reasons_for_bad_ones(telco_server):
    url, result = telco_server["url"], telco_server["result"]
    test = read_split(result.prepare.manifest_path, "test")
    raw = test.select(TELCO.base_features).cast(pl.String)
    bad_rows = {3: ("tenure", "abc"), 10: ("contract", "Three year"), 11: ("monthly_charges", "-1")}
    for row, (column, value) in bad_rows.items():
        raw = raw.with_columns(
            pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
    for fmt in ("csv", "parquet"):
        buffer = io.BytesIO()
        raw.write_csv(buffer) if fmt == "csv" else raw.write_parquet(buffer)
        media = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
        response = httpx.post(
            f"{url}/v1/score_file", content=buffer.getvalue(), headers={"content-type": media}, timeout=60
        )
        assert response.status_code == 200, response.text
        scored = pl.read_parquet(io.BytesIO(response.content))
        assert scored.height == raw.height
        rejected = scored.filter(pl.col("reason").is_not_null())
        assert sorted(rejected.get_column("row")) == sorted(bad_rows)
        assert rejected.get_column("probability").is_null().all()
        assert rejected.get_column("prediction_id").is_null().all()
        good = scored.filter(pl.col("reason").is_null())
        assert good.get_column("prediction_id").n_unique() == good.height == raw.height - 3
        direct = _post(url, "predict", {"records": test.select(TELCO.base_features).head(3).to_dicts()}).json()
        assert good.get_column("probability").head(3).to_list() == pytest.approx(
            [p["probability"] for p in direct["predictions"]], abs=1e-12
        )
        assert response.headers["x-rows-rejected"] == "3"


def test_bulk_file_errors_are_4xx(telco_server):
    url = telco_server["url"]
    csv, parquet = {"content-type": "text/csv"}, {"content-type": "application/vnd.apache.parquet"}
    assert httpx.post(f"{url}/v1/score_file", content=b"", headers=csv, timeout=30).status_code == 400
    assert httpx.post(f"{url}/v1/score_file", content=b"a,b\n1,2\n", headers=csv, timeout=30).status_code == 400
    assert httpx.post(f"{url}/v1/score_file", content=b"PAR1garbage", headers=parquet, timeout=30).status_code == 400


def test_openapi_fuzzing_finds_no_server_error(telco_server, tmp_path):
    schemathesis = str(Path(sys.executable).with_name("schemathesis"))
    proc = subprocess.run(
        [
            schemathesis, "run", f"{telco_server['url']}/docs.json",
            "--checks", "not_a_server_error", "--phases", "coverage,fuzzing",
            "--max-examples", "40", "--workers", "2", "--seed", "20261122",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "passed" in proc.stdout


def test_second_dataset_serves_and_never_logs_sensitive_columns(orders_server):
    spec = load_spec(FIXTURES / "orders.yaml")
    test = read_split(orders_server["result"].prepare.manifest_path, "test")
    kept = [c for c in spec.columns if c in test.columns]  # a sensitive column is in no snapshot
    assert "note" not in kept
    records = [r | {"note": "call me first"} for r in test.select(spec.id_column, *kept).head(4).to_dicts()]
    response = _post(orders_server["url"], "predict", {"records": records}, headers={"x-request-id": "orders-1"})
    assert response.status_code == 200, response.text
    assert {p["label"] for p in response.json()["predictions"]} <= {"kept", "returned"}
    log = logged_rows(orders_server["logs"], spec.name, {"orders-1"}, want=4)
    assert log.height == 4
    assert "note" not in log.columns and "call me first" not in str(log.to_dicts())  # sensitive in the config
    assert "order_id" in log.columns and "amount_eur" in log.columns


def test_a_refused_request_leaves_one_line_in_the_server_log_and_none_of_its_values(orders_server):
    import time

    spec = load_spec(FIXTURES / "orders.yaml")
    test = read_split(orders_server["result"].prepare.manifest_path, "test")
    kept = [c for c in spec.columns if c in test.columns]
    record = test.select(spec.id_column, *kept).row(0, named=True) | {"note": "call me first", "items": "lots"}
    log = orders_server["workdir"] / "serve.log"
    before = log.stat().st_size
    for path in ("predict_batched", "explain", "feedback"):
        payload = {"labels": [{"prediction_id": "call me first", "label": 7}]} if path == "feedback" else {}
        response = _post(orders_server["url"], path, payload or {"records": [record] * 3})
        assert response.status_code == 400 and "call me first" not in response.text, response.text
    deadline = time.monotonic() + 10
    while (written := log.read_text()[before:]).count("Refused /") < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"\n{written}")
    assert written.count("Refused /") == 3 and "Traceback" not in written and "call me first" not in written
    assert (
        "Refused /predict_batched: 3 validation errors (records.0.items, records.1.items, records.2.items)" in written
    )


def test_packaging_the_same_version_again_is_a_cache_hit(telco_server):
    from flows.package import package

    again = package(config=CONFIGS / "telco_churn.yaml", workdir=telco_server["workdir"])
    first = telco_server["result"].package
    assert again.bento_tag == first.bento_tag
    assert not again.built_bento and not again.imported_model
