"""The retrain flow in-process on a real MLflow database (the deployment/automation path
is in tests/deploy/test_drift_retrain.py)."""

from __future__ import annotations

import polars as pl
import pytest

from flows.lifecycle import lifecycle
from flows.monitor import monitor
from flows.retrain import retrain
from tasks.core.spec import load_spec
from tasks.monitor import MONITORING_SUFFIX
from tasks.simulate import DriftRecipe, drifted_batch, valid_rows
from tasks.stores import registry
from tasks.stores.snapshots import load_manifest, read_split
from tests.conftest import CONFIGS

TELCO = CONFIGS / "telco_churn.yaml"
SPEC = load_spec(TELCO)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A champion of its own (these tests move aliases) and simulated labelled batches."""
    workdir = tmp_path_factory.mktemp("retrain")
    lifecycle(config=TELCO, workdir=workdir, n_trials=5)
    rows = valid_rows(SPEC)
    recipe = DriftRecipe.default(SPEC)
    batches = {}
    for seed in (1, 2):
        batches[seed] = workdir / f"drifted-{seed}.csv"
        drifted_batch(rows, SPEC, 1200, seed, recipe).write_csv(batches[seed])
    unlabelled = workdir / "unlabelled.csv"
    drifted_batch(rows, SPEC, 500, 3, recipe).with_columns(pl.lit(None).alias("churn")).write_csv(unlabelled)
    cfg = registry.default_tracking(workdir, SPEC.name, SPEC.registered_model_name)
    return workdir, batches, unlabelled, cfg


def test_monitor_logs_to_mlflow_and_to_the_evidently_workspace(world):
    from evidently.ui.workspace import Workspace

    workdir, batches, _, cfg = world
    result = monitor(config=TELCO, batch=batches[1], workdir=workdir)
    assert result.status == "drift" and result.rows_labelled == result.rows
    assert result.performance is not None and result.performance.live is not None
    run = cfg.client().get_run(result.mlflow_run_id)
    experiment = cfg.client().get_experiment(run.info.experiment_id)
    assert experiment.name == SPEC.name + MONITORING_SUFFIX
    assert run.info.artifact_uri.startswith(workdir.resolve().as_uri())  # never ./mlruns in the cwd
    assert run.data.metrics["drift_share"] == pytest.approx(result.drift_share)
    assert run.data.metrics["drift_score.contract"] > 0
    assert any(a.path.endswith(".html") for a in cfg.client().list_artifacts(run.info.run_id, "drift"))
    workspace = Workspace(str(workdir / "monitoring" / "evidently"))
    project = workspace.search_project(SPEC.name)[0]
    assert len(workspace.list_runs(project.id)) >= 1


def test_retrain_builds_a_fresh_snapshot_and_decides_on_the_same_fresh_test_rows(world):
    workdir, batches, _, cfg = world
    champion = registry.version_by_alias(cfg, registry.CHAMPION)
    result = retrain(config=TELCO, batch=batches[1], workdir=workdir, n_trials=5, reason="test")
    assert result.base_version == champion.version and result.status in {"promoted", "kept"}
    manifest_path = workdir / "snapshots" / SPEC.name / result.data_version / "manifest.json"
    manifest = load_manifest(manifest_path)
    old = load_manifest(registry.version_manifest(cfg, champion.version))
    assert manifest.rows.rows_kept == old.rows.rows_kept + 1200 - manifest.rows.rows_quarantined
    # the champion's old test rows stay test rows: neither model trained on the fresh test split
    old_test = read_split(registry.version_manifest(cfg, champion.version), "test")
    new_test = read_split(manifest_path, "test")
    assert new_test.height > old_test.height
    assert new_test.head(old_test.height).equals(old_test)
    challenger = [v for v in registry.versions(cfg) if v.version == result.challenger_version][0]
    assert challenger.tags["retrained_from"] == champion.version
    run = cfg.client().get_run(challenger.run_id)
    assert "test_champion_roc_auc" in run.data.metrics  # compared with the champion on those rows
    if result.status == "promoted":
        assert registry.version_by_alias(cfg, registry.CHAMPION).version == result.challenger_version
    else:
        assert registry.version_by_alias(cfg, registry.CHAMPION).version == champion.version
        assert "gate failed" in result.reasons[0]


def test_a_repeated_retrain_creates_no_new_version(world):
    workdir, batches, _, cfg = world
    before = registry.versions(cfg)
    first = registry.version_by_alias(cfg, registry.PREVIOUS) or registry.version_by_alias(cfg, registry.CHAMPION)
    again = retrain(config=TELCO, batch=batches[1], workdir=workdir, drifted_version=first.version, n_trials=5)
    assert again.status in {"promoted", "kept"}
    assert [v.version for v in registry.versions(cfg)] == [v.version for v in before]


def test_a_drift_event_about_a_replaced_champion_is_stale(world):
    workdir, batches, _, cfg = world
    champion = registry.version_by_alias(cfg, registry.CHAMPION).version
    other = next(v.version for v in registry.versions(cfg) if v.version != champion)
    before = len(registry.versions(cfg))
    result = retrain(config=TELCO, batch=batches[2], workdir=workdir, drifted_version=other, n_trials=5)
    assert result.status == "stale" and f"v{other} to v{champion}" in result.reasons[0]
    assert len(registry.versions(cfg)) == before
    assert registry.version_by_alias(cfg, registry.CHAMPION).version == champion


def test_an_unlabelled_batch_is_skipped_with_its_reason(world):
    workdir, _, unlabelled, cfg = world
    champion = registry.version_by_alias(cfg, registry.CHAMPION).version
    result = retrain(config=TELCO, batch=unlabelled, workdir=workdir)
    assert result.status == "skipped" and "0 labelled valid rows" in result.reasons[0]
    assert registry.version_by_alias(cfg, registry.CHAMPION).version == champion


def test_a_batch_without_the_declared_columns_fails_and_keeps_the_champion(world, tmp_path):
    workdir, batches, _, cfg = world
    champion = registry.version_by_alias(cfg, registry.CHAMPION).version
    broken = tmp_path / "broken.csv"
    pl.read_csv(batches[2], infer_schema=False).drop("contract").write_csv(broken)
    with pytest.raises(Exception, match="contract"):
        retrain(config=TELCO, batch=broken, workdir=workdir)
    assert registry.version_by_alias(cfg, registry.CHAMPION).version == champion
