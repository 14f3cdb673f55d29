"""A table with values as many tables have them (integer id, integer category codes, a 0/1 int
column, a 0/1 target) served with nothing but its config: JSON numbers where the table has
numbers, text trimmed, true/false never a number; score_file reads bodies like prepare reads files."""

from __future__ import annotations

import io

import httpx
import polars as pl
import pytest

from flows.lifecycle import lifecycle
from tests.conftest import FIXTURES
from tests.serving.server import bento_server

CODED = FIXTURES / "coded.yaml"
RECORD = {"applicant": 1042, "marital": 1, "region": " north ", "smoker": 0, "age": 40, "income": 52.5}
CSV = {"content-type": "text/csv"}


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("coded")
    result = lifecycle(config=CODED, workdir=workdir, n_trials=3)
    with bento_server(result.package.bento_tag, workdir / "serve.log") as url:
        yield result, url


def test_predict_takes_values_as_the_table_has_them(coded):
    _, url = coded
    ok = httpx.post(f"{url}/predict", json={"records": [RECORD, RECORD | {"marital": "2", "applicant": "7"}]})
    assert ok.status_code == 200, ok.text
    assert {p["label"] for p in ok.json()["predictions"]} <= {"0", "1"}
    for bad in ({"smoker": True}, {"age": False}, {"marital": 6}, {"applicant": "A-1"}):
        response = httpx.post(f"{url}/predict", json={"records": [RECORD | bad]}, timeout=30)
        assert response.status_code == 400 and next(iter(bad)) in response.text, (bad, response.text)
    pid = ok.json()["predictions"][0]["prediction_id"]
    stored = httpx.post(f"{url}/feedback", json={"labels": [{"prediction_id": pid, "label": 1}]}, timeout=30)
    assert stored.status_code == 200, stored.text


def test_score_file_scores_what_predict_scores_and_names_a_broken_line(coded):
    _, url = coded
    body = io.BytesIO()
    pl.DataFrame([RECORD | {"region": "north"}]).write_csv(body)
    scored = httpx.post(f"{url}/v1/score_file", content=body.getvalue(), headers=CSV, timeout=60)
    assert scored.status_code == 200, scored.text
    assert pl.read_parquet(io.BytesIO(scored.content)).get_column("reason").to_list() == [None]
    ragged = b"applicant,marital,region,smoker,age,income\n1,2,north,0,40,1.5\n2,3,south,1,41\n"
    response = httpx.post(f"{url}/v1/score_file", content=ragged, headers=CSV, timeout=30)
    assert response.status_code == 400 and "line 3: 5 fields, the header has 6" in response.text, response.text
