"""The loop on live traffic, on a real Prefect server, real worker and `prefect deploy --all`: simulated
customers through the stable endpoint (nginx → `bentoml serve`), their labels posted later to
`/feedback`, the scheduled monitor deployment on the served window → `model.drift.detected` → the
automation retrains on what was served and labelled → gate → roll-out of the new champion."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from flows.lifecycle import lifecycle
from flows.rollout import rollout
from tasks.core.spec import load_spec, read_yaml
from tasks.events import DRIFT_DETECTED
from tasks.simulate import DriftRecipe, drifted_batch, post_labels, send_traffic, valid_rows
from tasks.stores import registry
from tasks.stores.backends import read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS
from tests.deploy.conftest import PrefectApi, flow_run_id, prefect, wait_for
from tests.serving.server import free_port

WINDOW_ROWS = 1500  # the monitor judges the champion's last 1,500 served rows


def finished(runs: list[dict]) -> bool:
    return bool(runs) and all(r["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} for r in runs)


def served_version(port: int) -> str | None:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=5).json()["model_version"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


@pytest.fixture(scope="module")
def loop(process_worker, prefect_api, tmp_path_factory):
    """The Telco champion (the config's full trial budget) serving on a stable port, a served window
    of the last 1,500 rows, batches for the hand-fed path."""
    folder = tmp_path_factory.mktemp("drift-loop")
    raw = read_yaml(CONFIGS / "telco_churn.yaml")
    raw["source"]["path"] = str((CONFIGS / raw["source"]["path"]).resolve())
    raw["monitoring"] = {"window": f"{WINDOW_ROWS}rows"}
    raw["rollout"]["watch_seconds"] = 0  # the watch has tests of its own (tests/containers/test_progressive.py)
    config = folder / "telco_churn.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(config)
    workdir = folder / "work"
    result = lifecycle(config=config, workdir=workdir)
    port = free_port()
    rollout(config=config, workdir=workdir, port=port, target="process")
    rows = valid_rows(spec)
    batches = folder / "batches"
    batches.mkdir()
    recipe = DriftRecipe.default(spec)
    for seed in (3, 4):
        drifted_batch(rows, spec, 1500, seed, recipe).write_csv(batches / f"drifted-{seed}.csv")
    test_rows = read_split(result.prepare.manifest_path, "test")
    yield process_worker | {
        "config": config, "spec": spec, "workdir": workdir, "stable_port": port, "batches": batches,
        "rows": rows, "test_rows": test_rows, "recipe": recipe,
    }  # fmt: skip
    state = read_state(workdir, spec.name, port)
    if state.live:
        stop_backend(state.live)
    stop_proxy(state_dir(workdir, spec.name, port))


def run_monitor(loop, batch: Path | None = None, watch: bool = True):
    """The monitor deployment as its schedule runs it (no batch: the served window), or on a batch."""
    args = ["deployment", "run", "monitor/monitor", "--param", f"config={loop['config']}"]
    args += ["--param", f"workdir={loop['workdir']}"]
    args += ["--param", f"batch={batch}"] if batch else []
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


def test_like_traffic_with_its_labels_reports_coverage_and_the_live_metric_and_does_not_retrain(loop):
    api, spec, url = PrefectApi(loop["env"]), loop["spec"], f"http://127.0.0.1:{loop['stable_port']}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    # customers like the champion's test customers (rows it never trained on), through the stable endpoint
    answered = send_traffic(url, loop["test_rows"].sample(800, seed=11), spec)
    assert post_labels(url, answered.head(600), spec) == 600  # the truth for 600 of them, later
    monitor_run = api.flow_run(run_monitor(loop))
    assert monitor_run["state_type"] == "COMPLETED"
    report = api.artifact(monitor_run["id"], "-drift-report")["data"]
    assert "**no_drift**" in report and "served window of v" in report, report
    assert "- labels: 600 of " in report and "- live roc_auc: " in report, report
    assert "- predictions: psi " in report
    table = api.artifact(monitor_run["id"], "-drift")
    assert table and table["type"] == "table"
    time.sleep(5)  # an automation acts within a second or two: give it room to misbehave
    assert api.events(DRIFT_DETECTED, since) == []
    assert api.flow_runs("retrain") == []
    assert list((loop["workdir"] / "monitoring" / spec.name).glob("drift-*.html")), "no HTML report written"


def test_drifted_traffic_with_its_labels_retrains_on_what_was_served_and_the_new_champion_serves(loop):
    api, port, cfg, spec = PrefectApi(loop["env"]), loop["stable_port"], tracking(loop), loop["spec"]
    url = f"http://127.0.0.1:{port}"
    before = registry.version_by_alias(cfg, registry.CHAMPION).version
    assert served_version(port) == before
    since = datetime.now(UTC) - timedelta(seconds=1)
    first_request = time.monotonic()
    answered = send_traffic(url, drifted_batch(loop["rows"], spec, WINDOW_ROWS, 2, loop["recipe"]), spec)
    assert post_labels(url, answered, spec) == WINDOW_ROWS
    run_monitor(loop, watch=False)
    event = wait_for(lambda: api.events(DRIFT_DETECTED, since), 300, "no drift event")[0]
    payload = event["payload"]
    assert event["resource"]["prefect.resource.id"] == f"model.{spec.name}"
    assert payload["batch"] is None and payload["window"]["model_version"] == before
    assert payload["model_version"] == before and payload["rows_labelled"] == WINDOW_ROWS

    # the moment the stable endpoint answers with another version (the old one drains after that)
    switched = lambda: served_version(port) not in {before, None} or finished(api.flow_runs("retrain"))  # noqa: E731
    wait_for(switched, 900, "a new version on the stable endpoint, or the retrain's end")
    elapsed = time.monotonic() - first_request
    runs = wait_for(lambda: finished(api.flow_runs("retrain")) and api.flow_runs("retrain"), 900, "retrain running")
    assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED", runs
    assert runs[0]["parameters"]["window"]["model_version"] == before and runs[0]["parameters"]["batch"] is None
    decision = api.artifact(runs[0]["id"], "-retrain")["data"]
    assert f"served window of v{before}" in decision and f"{WINDOW_ROWS} labelled" in decision, decision
    assert "| challenger |" in decision and "| champion |" in decision and "| logistic_regression |" in decision
    assert "**promoted**" in decision, decision
    champion = registry.version_by_alias(cfg, registry.CHAMPION).version
    assert champion != before and served_version(port) == champion
    started = datetime.fromisoformat(runs[0]["start_time"])
    to_start = (started - datetime.fromisoformat(event["occurred"])).total_seconds()
    print(f"\nfirst drifted request → v{champion} serving on the stable endpoint: {elapsed:.0f}s "
          f"(drift event → retrain start {to_start:.1f}s; trial budget {spec.training.n_trials})")  # fmt: skip
    assert to_start < 60


def test_two_drifted_batches_in_quick_succession_promote_at_most_once(loop):
    api, cfg = PrefectApi(loop["env"]), tracking(loop)
    before = registry.version_by_alias(cfg, registry.CHAMPION).version
    known = {r["id"] for r in api.flow_runs("retrain")}
    since = datetime.now(UTC)
    run_monitor(loop, loop["batches"] / "drifted-3.csv", watch=False)  # the hand-fed path: labelled files
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
