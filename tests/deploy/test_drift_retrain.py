"""The monitoring loop on a real Prefect server, real worker and `prefect deploy --all`:
monitor deployment → Evidently report → `model.drift.detected` → the automation runs the
retrain deployment → gate → roll-out of the new champion behind the stable endpoint."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from flows.lifecycle import lifecycle
from flows.rollout import rollout
from tasks.core.spec import load_spec
from tasks.events import DRIFT_DETECTED
from tasks.simulate import DriftRecipe, drifted_batch, valid_rows
from tasks.stores import registry
from tasks.stores.backends import read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tests.conftest import CONFIGS
from tests.deploy.conftest import PrefectApi, flow_run_id, prefect, wait_for
from tests.serving.server import free_port

N_TRIALS = 5


def finished(runs: list[dict]) -> bool:
    return bool(runs) and all(r["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} for r in runs)


def served_version(port: int) -> str | None:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=5).json()["model_version"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


@pytest.fixture(scope="module")
def loop(process_worker, prefect_api, tmp_path_factory):
    """A champion of its own serving on a stable port, a config with a small budget, batches."""
    folder = tmp_path_factory.mktemp("drift-loop")
    raw = yaml.safe_load((CONFIGS / "telco_churn.yaml").read_text())
    raw["source"]["path"] = str((CONFIGS / raw["source"]["path"]).resolve())
    raw["training"]["n_trials"] = N_TRIALS
    config = folder / "telco_churn.yaml"
    config.write_text(yaml.safe_dump(raw))
    spec = load_spec(config)
    workdir = folder / "work"
    lifecycle(config=config, workdir=workdir)
    port = free_port()
    rollout(config=config, workdir=workdir, port=port, target="process")
    rows = valid_rows(spec)
    batches = folder / "batches"
    batches.mkdir()
    rows.sample(1500, seed=1).write_csv(batches / "same.csv")
    recipe = DriftRecipe.default(spec)
    for seed in (2, 3, 4):
        drifted_batch(rows, spec, 1500, seed, recipe).write_csv(batches / f"drifted-{seed}.csv")
    yield process_worker | {"config": config, "spec": spec, "workdir": workdir, "stable_port": port, "batches": batches}
    state = read_state(workdir, spec.name, port)
    if state.live:
        stop_backend(state.live)
    stop_proxy(state_dir(workdir, spec.name, port))


def run_monitor(loop, batch: Path, watch: bool = True):
    args = ["deployment", "run", "monitor/monitor", "--param", f"config={loop['config']}"]
    args += ["--param", f"workdir={loop['workdir']}", "--param", f"batch={batch}"]
    out = prefect(loop["env"], *args, *(["--watch"] if watch else []), timeout=600)
    log = (loop["home"] / "worker.log").read_text()[-3000:]
    assert out.returncode == 0, out.stdout[-3000:] + log
    return flow_run_id(out.stdout)


def tracking(loop):
    spec = loop["spec"]
    return registry.default_tracking(loop["workdir"], spec.name, spec.registered_model_name)


def test_retrain_deployment_has_its_trigger_and_a_concurrency_limit(loop):
    inspect = prefect(loop["env"], "deployment", "inspect", "retrain/retrain")
    assert "'limit': 1" in inspect.stdout and "ENQUEUE" in inspect.stdout, inspect.stdout[-3000:]
    automations = prefect(loop["env"], "automation", "ls")
    assert "retrain-on-drift" in automations.stdout, automations.stdout


def test_a_batch_like_the_training_data_reports_but_does_not_retrain(loop):
    api = PrefectApi(loop["env"])
    since = datetime.now(UTC) - timedelta(seconds=1)
    monitor_run = api.flow_run(run_monitor(loop, loop["batches"] / "same.csv"))
    assert monitor_run["state_type"] == "COMPLETED"
    report = api.artifact(monitor_run["id"], "-drift-report")
    table = api.artifact(monitor_run["id"], "-drift")
    assert report and "**no_drift**" in report["data"] and ".html" in report["data"]
    assert table and table["type"] == "table"
    time.sleep(5)  # an automation acts within a second or two: give it room to misbehave
    assert api.events(DRIFT_DETECTED, since) == []
    assert api.flow_runs("retrain") == []
    reports = list((loop["workdir"] / "monitoring" / loop["spec"].name).glob("drift-*.html"))
    assert reports, "no HTML report written"


def test_a_drifted_batch_retrains_and_the_new_champion_serves(loop):
    api, port, cfg = PrefectApi(loop["env"]), loop["stable_port"], tracking(loop)
    before = registry.version_by_alias(cfg, registry.CHAMPION).version
    assert served_version(port) == before
    since = datetime.now(UTC) - timedelta(seconds=1)
    run_monitor(loop, loop["batches"] / "drifted-2.csv", watch=False)
    event = wait_for(lambda: api.events(DRIFT_DETECTED, since), 300, "no drift event")[0]
    occurred = datetime.fromisoformat(event["occurred"])
    assert event["resource"]["prefect.resource.id"] == f"model.{loop['spec'].name}"
    assert event["payload"]["model_version"] == before and event["payload"]["drift_share"] >= 0.3

    started = wait_for(
        lambda: [r for r in api.flow_runs("retrain") if r.get("start_time")], 120, "the automation started no retrain"
    )[0]
    to_start = (datetime.fromisoformat(started["start_time"]) - occurred).total_seconds()
    runs = wait_for(lambda: finished(api.flow_runs("retrain")) and api.flow_runs("retrain"), 900, "retrain running")
    assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED", runs
    assert runs[0]["parameters"]["drifted_version"] == before
    decision = api.artifact(runs[0]["id"], "-retrain")["data"]
    champion = registry.version_by_alias(cfg, registry.CHAMPION).version
    if "**promoted**" in decision:
        assert champion != before
        wait_for(lambda: served_version(port) == champion, 60, f"stable endpoint not on v{champion}")
        to_serving = (datetime.now(UTC) - occurred).total_seconds()
        print(f"\nevent → retrain start {to_start:.1f}s, event → v{champion} serving {to_serving:.1f}s")
    else:
        assert "**kept**" in decision and "why:" in decision, decision
        assert champion == before and served_version(port) == before
        print(f"\nevent → retrain start {to_start:.1f}s; champion kept: {decision}")
    assert to_start < 60


def test_two_drifted_batches_in_quick_succession_promote_at_most_once(loop):
    api, cfg = PrefectApi(loop["env"]), tracking(loop)
    before = registry.version_by_alias(cfg, registry.CHAMPION).version
    known = {r["id"] for r in api.flow_runs("retrain")}
    since = datetime.now(UTC)
    run_monitor(loop, loop["batches"] / "drifted-3.csv", watch=False)
    run_monitor(loop, loop["batches"] / "drifted-4.csv", watch=False)
    wait_for(lambda: len(api.events(DRIFT_DETECTED, since)) >= 2, 300, "two drift events")

    def new_runs():
        runs = [r for r in api.flow_runs("retrain") if r["id"] not in known]
        return len(runs) == 2 and finished(runs) and runs

    runs = wait_for(new_runs, 1200, "both retrains finishing", every=2)
    assert all(r["state_type"] == "COMPLETED" for r in runs), runs
    decisions = [api.artifact(r["id"], "-retrain")["data"] for r in runs]
    promoted = [d for d in decisions if "**promoted**" in d]
    assert len(promoted) <= 1, decisions
    champion = registry.version_by_alias(cfg, registry.CHAMPION)
    if promoted:
        assert champion.version != before and champion.tags["previous_champion"] == before
        assert any("**stale**" in d or "**kept**" in d for d in decisions)
    else:
        assert champion.version == before
    all_versions = registry.versions(cfg)
    keys = [(v.tags.get("lifecycle.data_version"), v.tags.get("lifecycle.training_hash")) for v in all_versions]
    assert len(keys) == len(set(keys)), keys
    assert len({v.run_id for v in all_versions}) == len(all_versions)
    print(f"\ntwo drifted batches: {[d.split(chr(10))[0] for d in decisions]}; versions {len(all_versions)}")
