"""prepare → train → evaluate → register on the real sample, MLflow on a real SQLite file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow.artifacts
import mlflow.models
import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest

from flows.lifecycle import lifecycle
from flows.rollback import rollback
from tasks.core.spec import load_spec
from tasks.stores import registry
from tasks.stores.backends import free_port, read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS, ROOT
from tests.flows.helpers import artifacts_of, child_flow_runs, task_states

TELCO = CONFIGS / "telco_churn.yaml"


def _run(**params):
    state = lifecycle(config=TELCO, **params, return_state=True)
    return state.result(), state.state_details.flow_run_id


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def tracking(workdir):
    spec = load_spec(TELCO)
    return registry.default_tracking(workdir, spec.name, spec.registered_model_name)


@pytest.fixture(scope="module")
def first(workdir):
    """The real config's budget, as `make run` uses it."""
    return _run(workdir=workdir)


@pytest.fixture(scope="module")
def second(first, workdir):
    """A re-run that reuses what the first recorded, and rolls the champion out (a process back-end)
    with the UIs' addresses known, as under `make stack`."""
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LIFECYCLE_MLFLOW_UI_URL", "http://127.0.0.1:5999")
        env.setenv("LIFECYCLE_EVIDENTLY_UI_URL", "http://127.0.0.1:8999")
        try:
            yield _run(workdir=workdir, rollout=True, target="process", port=port)
        finally:
            spec = load_spec(TELCO)
            state = read_state(workdir, spec.name, port)
            if state.live:
                stop_backend(state.live)
            stop_proxy(state_dir(workdir, spec.name, port))


@pytest.fixture(scope="module")
def bad(second, workdir, tmp_path_factory, telco_raw):
    """A candidate trained on shuffled labels: it must not be promoted."""
    rng = np.random.default_rng(0)
    labels = telco_raw.get_column("churn").to_numpy().copy()
    rng.shuffle(labels)
    path = tmp_path_factory.mktemp("bad") / "shuffled_labels.csv"
    telco_raw.with_columns(pl.Series("churn", labels)).write_csv(path)
    return _run(workdir=workdir, source=str(path), n_trials=5)


def test_first_run_registers_a_champion_that_beats_the_bar(first, tracking):
    result, _ = first
    ev = result.evaluate
    assert ev.candidate["roc_auc"] >= 0.84
    assert ev.baselines["majority_class"]["roc_auc"] == 0.5 == ev.baselines["uniform"]["roc_auc"]
    assert ev.baselines["logistic_regression"]["roc_auc"] > 0.8
    assert ev.baselines["decision_tree"]["roc_auc"] < ev.candidate["roc_auc"] and "stratified" in ev.baselines
    assert {"cv_roc_auc_mean", "cv_roc_auc_std", "latency_ms_per_row", "brier", "log_loss"} <= set(ev.candidate)
    assert {"ece", "fairness_tpr_ratio", "roc_auc_ci_low", "roc_auc_ci_high"} <= set(ev.candidate)
    assert ev.candidate["roc_auc_ci_low"] < ev.candidate["roc_auc"] < ev.candidate["roc_auc_ci_high"]
    # every rule of the config is in the gate's report, with its figures
    details = {c.rule: c.detail for c in ev.gate.checks}
    assert "gain" in details["roc_auc vs decision_tree (min gain 0.005)"]
    assert "ece=" in details["ece <= 0.05"] and "fairness_tpr_ratio=" in details["fairness_tpr_ratio >= 0.7"]
    assert {"every slice's roc_auc vs champion (max drop 0.1)",
            "pr_auc vs champion (max drop 0, unless the 95% intervals overlap)"} <= set(details)  # fmt: skip
    assert set(ev.fairness) == {"female", "senior_citizen"} and ev.errors[0]["excess"] > 0
    assert ev.gate.passed and result.registry.promoted
    assert result.registry.champion_version == result.registry.version == "1"
    champion = registry.version_by_alias(tracking, registry.CHAMPION)
    assert champion.run_id == result.train.run_id and "challenger" in champion.aliases


def test_run_is_fully_tracked(first, tracking):
    result, _ = first
    run = tracking.client().get_run(result.train.run_id)
    tags = run.data.tags
    assert tags["lifecycle.data_version"] == result.prepare.data_version
    assert tags["lifecycle.spec_hash"] == result.prepare.spec_hash
    assert run.inputs.dataset_inputs[0].dataset.digest == result.prepare.data_version
    names = {a.path for a in tracking.client().list_artifacts(result.train.run_id, "plots")}
    assert {f"plots/{p}.png" for p in ("roc_curve", "pr_curve", "calibration", "confusion_matrix")} <= names
    assert {"plots/feature_importance.png", "plots/shap_summary.png"} <= names
    card = mlflow.artifacts.load_text(f"runs:/{result.train.run_id}/model_card.md")
    assert result.prepare.data_version in card and "Promotion gate: PASSED" in card
    code = f"**Code:** `{tags['lifecycle.code_revision']}`"
    for section in ("## Uncertainty", "## Calibration: ECE", "## Error analysis", "## Fairness across `female`",
                    "## Fairness across `senior_citizen`", code):  # fmt: skip
        assert section in card, section
    assert len(tags["lifecycle.code_revision"]) == 40 and tags["lifecycle.code_dirty"] in ("true", "false")
    model_info = mlflow.models.get_model_info(result.train.model_uri)
    assert model_info.metadata["code_revision"] == tags["lifecycle.code_revision"]  # the model carries it too
    evaluate_run = next(r.id for r in child_flow_runs(first[1]) if r.name.startswith("evaluate-"))
    published = artifacts_of(evaluate_run)
    shown = published["telco-churn-model-card"].data  # the card in the Prefect UI shows its plots
    assert shown.count("](data:image/png;base64,") == 4 and "_Reused" not in shown
    assert {"telco-churn-error-analysis", "telco-churn-fairness-female", "telco-churn-fairness-senior-citizen"} <= set(
        published
    )
    trials = tracking.client().search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.train.run_id}'", max_results=500
    )
    assert len(trials) == result.train.n_trials == 50


def test_the_result_names_the_model_its_run_and_where_it_is(first, tracking):
    result, flow_run_id = first
    out, version = result.outputs, result.registry.version
    run = tracking.client().get_run(result.train.run_id)
    assert out.model_id == f"{tracking.model_name}/{version}"
    assert out.model_uri == f"models:/{tracking.model_name}/{version}"
    assert (out.experiment_id, out.run_id) == (run.info.experiment_id, result.train.run_id)
    source = tracking.client().get_model_version(tracking.model_name, version).source  # models:/m-…
    assert out.artifact_uri == tracking.client().get_logged_model(source.removeprefix("models:/")).artifact_location
    assert (Path(out.artifact_uri.removeprefix("file://")) / "MLmodel").is_file()  # the model's own files
    assert out.metrics == result.evaluate.candidate and out.endpoint is None and result.rollout is None
    assert out.links.mlflow_run is None and out.links.evidently_project is None  # no UI address known
    assert out.links.prefect_run.endswith(f"/runs/flow-run/{flow_run_id}")


def test_a_run_that_rolls_out_names_its_endpoint_and_the_dashboards(second):
    result, _ = second
    out = result.outputs
    assert result.rollout.switched and out.endpoint == result.rollout.endpoint
    assert httpx.post(f"{out.endpoint}/model_info", json={}).json()["model_version"] == result.registry.champion_version
    run = f"#/experiments/{out.experiment_id}/runs/{out.run_id}"
    assert out.links.mlflow_run == f"http://127.0.0.1:5999/{run}"
    assert re.fullmatch(r"http://127\.0\.0\.1:8999/projects/[0-9a-f-]{36}", out.links.evidently_project)


def test_the_model_carries_its_preprocessing_and_spec(first, tracking):
    result, _ = first
    tracking.activate()
    model = mlflow.pyfunc.load_model(f"models:/{tracking.model_name}@champion")
    test = read_split(result.prepare.manifest_path, "test")
    spec = load_spec(TELCO)
    raw = test.select(spec.base_features).head(100).to_pandas()  # raw input columns, no features
    out = model.predict(raw)
    inner = model.unwrap_python_model().model
    assert np.allclose(out["probability"].to_numpy(), inner.predict_scores(test.head(100)))
    assert set(out["label"]) <= {"Yes", "No"}
    assert inner.metadata["data_version"] == result.prepare.data_version
    assert inner.spec.feature_names == spec.feature_names


def test_the_registered_model_ships_the_core_package_only_and_nothing_pickled(first, tracking, tmp_path):
    tracking.activate()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{tracking.model_name}@champion", dst_path=str(tmp_path)))
    code = sorted(str(p.relative_to(local / "code")) for p in (local / "code").rglob("*.py"))
    core = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tasks" / "core").rglob("*.py"))
    assert code == sorted(["tasks/__init__.py", *core])
    assert not [p.name for p in local.rglob("*") if p.suffix in {".pkl", ".pickle", ".joblib"}]
    assert (local / "artifacts" / "model" / "booster.txt").read_text().startswith("tree")
    # a new process loads it from those files, running the core the model ships (not the repository's)
    probe = (
        "import mlflow.pyfunc, sys; m = mlflow.pyfunc.load_model(sys.argv[1]).unwrap_python_model().model; "
        "print(m.decision.threshold, sys.modules['tasks.core.model'].__file__)"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(local)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    threshold, module = out.stdout.strip().splitlines()[-1].split()
    assert float(threshold) == first[0].train.decision["threshold"]
    assert Path(module).is_relative_to(local / "code" / "tasks" / "core")


def test_second_run_reuses_snapshot_candidate_and_evaluation(first, second):
    result, run_id = second
    runs = {r.name.split("-")[0]: r.id for r in child_flow_runs(run_id)}
    prepare_states, train_states = task_states(runs["prepare"]), task_states(runs["train"])
    evaluate_states = task_states(runs["evaluate"])
    assert prepare_states["find-snapshot"] == "Completed" and "ingest" not in prepare_states, prepare_states
    assert train_states["find-training-run"] == "Completed" and "tune" not in train_states, train_states
    assert "score-models" not in evaluate_states and "explain" not in evaluate_states, evaluate_states
    assert result.train.reused_run and result.train.run_id == first[0].train.run_id
    assert result.evaluate.reused and result.evaluate.gate == first[0].evaluate.gate
    assert not result.registry.created and not result.registry.promoted
    assert "already the champion" in result.registry.reason
    # what was reused is still shown: the evaluation's artifacts, saying so
    published = artifacts_of(runs["evaluate"])
    card, metrics = published["telco-churn-model-card"], published["telco-churn-test-metrics"]
    assert card.data.startswith(f"_Reused: the evaluation recorded on MLflow run {result.train.run_id}")
    assert "Promotion gate: PASSED" in card.data and "Reused" in metrics.description
    assert card.data.count("](data:image/png;base64,") == 4  # ROC, PR, calibration, SHAP: pictures, not file names
    assert json.loads(metrics.data)[0]["model"] == "candidate"


def test_a_crash_after_tuning_resumes_from_prefects_cache(second, workdir):
    """Same snapshot, but the MLflow store lost the run (as if logging crashed): the
    baselines, the study and the final fit come from the cache, the run is logged again."""
    from flows.train import train

    lost = f"sqlite:///{workdir / 'another-store.db'}"
    state = train(config=TELCO, manifest_path=second[0].prepare.manifest_path, workdir=workdir, tracking_uri=lost,
                  return_state=True)  # fmt: skip
    states = task_states(state.state_details.flow_run_id)
    assert all(states[t] == "Cached" for t in ("fit-baselines", "tune", "fit-final")), states
    assert states["log-training-run"] == "Completed" and not state.result().reused_run


def test_a_bad_candidate_is_not_promoted_and_the_champion_still_loads(bad, first, tracking):
    result, _ = bad
    good, _ = first
    assert result.evaluate.candidate["roc_auc"] < 0.6
    assert not result.evaluate.gate.passed and not result.registry.promoted
    assert "gate failed, v1 stays champion" in result.registry.reason
    assert result.registry.version == "2" and result.registry.champion_version == "1"
    tracking.activate()
    champion = mlflow.pyfunc.load_model(f"models:/{tracking.model_name}@champion").unwrap_python_model().model
    assert champion.metadata["data_version"] == good.prepare.data_version
    assert registry.version_by_alias(tracking, registry.CHALLENGER).version == "2"
    tags = registry.version_by_alias(tracking, registry.CHALLENGER).tags
    assert tags["gate_passed"] == "False" and "roc_auc >= 0.84" in tags["gate_reasons"]


def test_alias_moves_and_roll_back(bad, tracking, workdir):
    registry.promote(tracking, "2")  # by hand, to have something to roll back
    assert registry.version_by_alias(tracking, registry.CHAMPION).version == "2"
    assert registry.version_by_alias(tracking, registry.PREVIOUS).version == "1"
    result = rollback(config=TELCO, workdir=workdir)
    assert (result.from_version, result.to_version) == ("2", "1")
    assert registry.version_by_alias(tracking, registry.CHAMPION).version == "1"
    assert registry.version_by_alias(tracking, registry.PREVIOUS) is None
    with pytest.raises(LookupError, match="nothing to roll back"):
        registry.rollback(tracking)
    assert len(registry.versions(tracking)) == 2  # no duplicates after all these runs


@pytest.mark.parametrize(
    "phase", ["lifecycle", "train", "evaluate", "register", "rollback", "package", "rollout", "monitor"]
)
def test_every_phase_has_a_cli(phase):
    out = subprocess.run(
        [sys.executable, "-m", f"flows.{phase}", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "--config" in out and "--workdir" in out
