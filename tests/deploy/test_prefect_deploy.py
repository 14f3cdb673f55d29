"""prefect.yaml against a real server: deploy everything, run the roll-out through a real worker."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tasks.core.spec import load_spec
from tasks.stores.backends import read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tests.conftest import CONFIGS
from tests.deploy.conftest import PrefectApi, flow_run_id, prefect, wait_for
from tests.serving.server import free_port

TELCO = load_spec(CONFIGS / "telco_churn.yaml")
EXPECTED = {
    "lifecycle", "prepare", "package", "rollout", "rollback", "labels", "monitor", "retrain", "lifecycle-docker",
}  # fmt: skip


def test_deploy_all_creates_every_deployment(deployed):
    out = prefect(deployed["env"], "deployment", "ls")
    assert out.returncode == 0, out.stderr
    for name in EXPECTED:
        assert f"/{name}" in out.stdout, out.stdout
    inspect = prefect(deployed["env"], "deployment", "inspect", "rollout/rollout")
    assert re.search(r"'limit': 1\b|'concurrency_limit': 1\b", inspect.stdout), inspect.stdout[-3000:]
    monitor = prefect(deployed["env"], "deployment", "inspect", "monitor/monitor")
    assert "0 3 * * *" in monitor.stdout, monitor.stdout[-2000:]
    docker = prefect(deployed["env"], "deployment", "inspect", "lifecycle/lifecycle-docker")
    assert "lifecycle/flow-runner" in docker.stdout and "lifecycle-docker" in docker.stdout


def test_rollout_deployment_runs_through_a_real_worker(process_worker, telco_lifecycle):
    _, workdir = telco_lifecycle
    port = free_port()
    started = time.monotonic()
    params = ["--param", f"workdir={workdir}", "--param", f"port={port}", "--param", "target=process"]
    out = prefect(process_worker["env"], "deployment", "run", "rollout/rollout", *params, "--watch", timeout=900)
    elapsed = time.monotonic() - started
    log = (process_worker["home"] / "worker.log").read_text()[-4000:]
    assert out.returncode == 0, out.stdout[-3000:] + log
    assert "Completed" in out.stdout, out.stdout[-3000:] + log
    try:
        info = httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=10).json()
        assert info["dataset"] == TELCO.name
        print(f"\nrollout via deployment + worker: {elapsed:.0f}s; serving v{info['model_version']}")
    finally:
        state = read_state(workdir, TELCO.name, port)
        if state.live:
            stop_backend(state.live)
        stop_proxy(state_dir(workdir, TELCO.name, port))
    assert json.loads(json.dumps(info))["model_version"]


def test_a_staged_rollout_waits_for_approval_in_the_ui_then_serves(process_worker, telco_lifecycle):
    _, workdir = telco_lifecycle
    api = PrefectApi(process_worker["env"])
    port, staging = free_port(), free_port()
    plan = {"staging": {"port": staging, "requests": 30, "approval_timeout_seconds": 600}, "watch_seconds": 0}
    params = {"workdir": str(workdir), "port": port, "target": "process", "plan": plan}
    out = prefect(process_worker["env"], "deployment", "run", "rollout/rollout", "--params", json.dumps(params))
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = flow_run_id(out.stdout)
    try:
        wait_for(lambda: _paused(api, run_id), 600, "the roll-out paused for approval")
        paused = api.flow_run(run_id)["state"]
        assert paused["state_details"]["run_input_keyset"], paused  # the UI shows the approval form
        served = httpx.post(f"http://127.0.0.1:{staging}/model_info", json={}, timeout=10).json()
        with pytest.raises(httpx.ConnectError):  # production has not started
            httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=5)
        api.post(f"/flow_runs/{run_id}/resume", {"run_input": {"approve": True, "note": "looks good"}})
        done = wait_for(lambda: _final(api, run_id), 600, "the approved roll-out finished")
        assert done == "COMPLETED", api.flow_run(run_id)["state"]
        live = httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=10).json()
        assert live["model_version"] == served["model_version"]
        artifact = api.artifact(run_id, "-rollout")
        assert artifact and "| staging |" in artifact["data"], artifact
    finally:
        state = read_state(workdir, TELCO.name, port)
        if state.live:
            stop_backend(state.live)
        for endpoint in (port, staging):
            stop_proxy(state_dir(workdir, TELCO.name, endpoint))


def _paused(api: PrefectApi, run_id: str) -> bool:
    state = api.flow_run(run_id)["state"]
    assert state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), state  # ended without pausing
    return state["type"] == "PAUSED"


def _final(api: PrefectApi, run_id: str) -> str | None:
    state = api.flow_run(run_id)["state"]["type"]
    return state if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None
