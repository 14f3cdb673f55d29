"""A second public table (credit scoring, from the R package modeldata) through the whole
lifecycle and served over HTTP with nothing but its config: no code names its columns."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from flows.lifecycle import lifecycle
from tasks.core.spec import load_spec
from tasks.stores import registry
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS
from tests.serving.server import assert_served_as_registered, bento_server

CREDIT = CONFIGS / "credit_data.yaml"


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("credit")
    result = lifecycle(config=CREDIT, workdir=workdir, n_trials=8)
    with bento_server(result.package.bento_tag, workdir / "serve.log") as url:
        yield result, workdir, url


def test_the_second_dataset_is_prepared_trained_evaluated_and_registered(credit):
    result, workdir, _ = credit
    spec = load_spec(CREDIT)
    assert result.prepare.rows_in == 4454 == result.prepare.rows_kept + result.prepare.rows_quarantined
    assert result.evaluate.candidate["roc_auc"] > 0.8
    assert result.evaluate.gate.passed and result.registry.promoted
    assert {s["column"] for s in _slices(workdir, result.train.run_id)} == set(spec.evaluation.slices)
    assert result.package.bento_tag.startswith("credit_data")
    # `Home` is protected in the config: each housing group's selection rate, TPR and FPR, and the worst ratios
    groups = result.evaluate.fairness["Home"]
    test = read_split(result.prepare.manifest_path, "test")
    counts = dict(test.get_column("Home").cast(str).fill_null("<null>").value_counts().iter_rows())
    assert {g["group"]: g["rows"] for g in groups} == counts
    judged = [g for g in groups if g["judged"]]
    assert len(judged) >= 3 and max(g["tpr_ratio"] for g in judged) == 1.0
    assert result.evaluate.candidate["fairness_tpr_ratio"] == pytest.approx(min(g["tpr_ratio"] for g in judged))
    print("\nHome groups: " + "; ".join(f"{g['group']} ({g['rows']}): TPR {g['tpr']:.3f}" for g in groups))


def _slices(workdir, run_id):
    import json

    cfg = registry.default_tracking(workdir, "credit_data", "credit_data")
    path = cfg.client().download_artifacts(run_id, "evaluation/slices.json", str(workdir))
    return json.loads(open(path).read())


def test_the_second_dataset_serves_the_registered_model_over_http(credit):
    result, workdir, url = credit
    spec = load_spec(CREDIT)
    test = read_split(result.prepare.manifest_path, "test").head(50)
    records = [{k: v for k, v in r.items() if v is not None} for r in test.select(spec.base_features).to_dicts()]
    response = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    served = np.array([p["probability"] for p in response.json()["predictions"]])
    cfg = registry.default_tracking(workdir, spec.name, spec.registered_model_name)
    offline = registry.load_model(cfg, f"models:/{spec.registered_model_name}@champion").predict_scores(test)
    np.testing.assert_allclose(served, offline, atol=1e-9)
    bad = httpx.post(f"{url}/predict", json={"records": [{**records[0], "Age": 7}]}, timeout=30)
    assert bad.status_code == 400 and "Age" in bad.text
    assert assert_served_as_registered(url, workdir, result.prepare.manifest_path, spec) == result.prepare.rows_kept
