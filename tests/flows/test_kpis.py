"""The success criteria measured by the system on a history of its own real runs: a completed and a
failed training, a completed and a rolled-back roll-out, served traffic, a clean and a drifted
monitoring run, a retrain on the drifted window. Each figure is checked against the records it
comes from (the Prefect API, the monitor's results, the retrain's roll-out), and the missed
targets raise exactly one event."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from flows.kpis import kpis
from flows.lifecycle import lifecycle
from flows.monitor import monitor
from flows.retrain import retrain
from flows.rollout import rollout
from flows.train import train
from tasks.core.spec import load_spec
from tasks.events import KPI_MISSED
from tasks.simulate import DriftRecipe, drifted_batch, post_labels, sample_batch, send_traffic, valid_rows
from tasks.stores.backends import RolloutFailed, free_port, read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tests.conftest import CONFIGS

TELCO = CONFIGS / "telco_churn.yaml"
SPEC = load_spec(TELCO)


def _states(flow: str, workdir) -> list[str]:
    """The hand check: state types of this workdir's runs of `flow`, straight from the API."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])), limit=200)
    return sorted(r.state_type.value for r in runs if str(r.parameters.get("workdir")) == str(workdir))


def _events(name: str, since: datetime) -> list[dict]:
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events/filter", json={"filter": {"event": {"name": [name]},
                                  "occurred": {"since": since.isoformat()}}, "limit": 50})  # fmt: skip
        return response.json()["events"]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    workdir, port = tmp_path_factory.mktemp("kpis") / "work", free_port()
    started = datetime.now(UTC)
    lifecycle(config=TELCO, workdir=workdir, n_trials=5)
    broken = workdir / "snapshots" / SPEC.name / "broken" / "manifest.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    with pytest.raises(ValueError):  # a failed training: its manifest is not JSON
        train(config=TELCO, manifest_path=broken, workdir=workdir, n_trials=5)
    try:
        served = rollout(config=TELCO, workdir=workdir, target="process", port=port, plan={"watch_seconds": 0})
        with pytest.raises(RolloutFailed):  # a roll-out whose new back-end is not ready in time: rolled back
            rollout(config=TELCO, workdir=workdir, target="process", port=port, ready_timeout=0.5)
        rows = valid_rows(SPEC)
        clean = send_traffic(served.endpoint, sample_batch(rows, 300, seed=1), SPEC, batch_size=50)
        post_labels(served.endpoint, clean, SPEC)
        time.sleep(3)  # the log's flusher
        quiet = monitor(config=TELCO, workdir=workdir)
        drifted = drifted_batch(rows, SPEC, 1200, 2, DriftRecipe.default(SPEC))
        answered = send_traffic(served.endpoint, drifted, SPEC, batch_size=100)
        post_labels(served.endpoint, answered, SPEC)
        time.sleep(3)
        alarm = monitor(config=TELCO, workdir=workdir)
        retrained = retrain(config=TELCO, workdir=workdir, n_trials=5, rollout_target="process", port=port,
                            window=alarm.window, drifted_version=alarm.model_version, reason="drift")  # fmt: skip
        live = f"http://127.0.0.1:{port}"  # the stable endpoint, on the retrained version if it was promoted
        send_traffic(live, sample_batch(rows, 200, seed=3), SPEC, batch_size=5)  # 40 requests to time
        measured = kpis(config=TELCO, workdir=workdir, days=1)
        yield {"workdir": workdir, "started": started, "quiet": quiet, "alarm": alarm, "retrained": retrained,
               "kpis": measured}  # fmt: skip
    finally:
        state = read_state(workdir, SPEC.name, port)
        if state.live:
            stop_backend(state.live)
        stop_proxy(state_dir(workdir, SPEC.name, port))


def test_each_success_criterion_is_measured_from_the_runs_that_happened(history):
    figures = {f.name: f for f in history["kpis"].figures}
    print("\n" + json.dumps([f.model_dump() for f in history["kpis"].figures], indent=1, default=str))
    train_states = _states("train", history["workdir"])
    assert train_states.count("FAILED") == 1 and train_states.count("COMPLETED") >= 2  # the lifecycle's, the retrain's
    completed = train_states.count("COMPLETED")
    assert figures["training_success_rate"].value == pytest.approx(completed / (completed + 1))
    assert figures["training_success_rate"].met is False
    rollout_states = _states("rollout", history["workdir"])
    assert rollout_states.count("FAILED") == 1
    done = rollout_states.count("COMPLETED")
    assert (
        figures["deployment_success_rate"].value == pytest.approx(done / (done + 1))
        and not figures["deployment_success_rate"].met
    )
    latency = figures["inference_p95_ms"]
    assert 0 < latency.value < 1000 and int(latency.detail.split()[0]) >= 40, latency  # the live back-end's requests
    quiet, alarm = history["quiet"], history["alarm"]
    assert quiet.status == "no_drift" and alarm.status == "drift", (quiet.reasons, alarm.reasons)
    # the drifted traffic began after the clean run's verdict; its alarm came within this test
    assert 0 < figures["drift_detection_hours"].value < 0.25 and figures["drift_detection_hours"].met
    if history["retrained"].status == "promoted":
        assert figures["retraining_hours"].value < 0.25 and figures["retraining_hours"].met
    else:  # a retrain that kept the champion put no new version to serve
        assert figures["retraining_hours"].value is None


def test_a_missed_target_raises_exactly_one_event(history):
    result = history["kpis"]
    assert set(result.missed) == {"training_success_rate", "deployment_success_rate"}

    def mine():
        found = _events(KPI_MISSED, history["started"])
        return [e for e in found if e["resource"]["prefect.resource.name"] == SPEC.name]

    deadline = time.monotonic() + 30
    while not (events := mine()) and time.monotonic() < deadline:  # events reach the API a moment later
        time.sleep(1)
    assert [e["id"] for e in events] == [result.event_id]
    assert set(events[0]["payload"]["missed"]) == set(result.missed)
