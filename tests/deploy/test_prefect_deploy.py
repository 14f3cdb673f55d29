"""prefect.yaml against a real server: deploy everything, run the roll-out through a real worker."""

from __future__ import annotations

import json
import re
import time

import httpx

from tasks.core.spec import load_spec
from tasks.stores.backends import read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tests.conftest import CONFIGS
from tests.deploy.conftest import prefect
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
