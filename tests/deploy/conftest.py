"""A real `prefect server start`, work pools, `prefect deploy --all` and a real worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.serving.server import free_port, wait_until_ok

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory, docker_engine):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # a run queued behind a deployment's concurrency limit is rescheduled 15 s ahead, not 30 s (the
        # server's default); less the worker's 10 s prefetch, it is tried again every ~5 s instead of ~20 s:
        # the second of two quick retrains starts soon after the first ends, still one at a time
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "15",
        "LIFECYCLE_PROJECT_DIR": str(ROOT),
        "LIFECYCLE_FLOW_IMAGE_TAG": "test",
    }
    env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
    server = _spawn([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log")
    wait_until_ok(f"http://127.0.0.1:{port}/api/health", 120, lambda: (home / "server.log").read_text()[-3000:])
    yield {"env": env, "home": home, "port": port}
    _stop(server)


class PrefectApi:
    """The few REST calls the checks need, against a real server."""

    def __init__(self, env: dict):
        self.url = env["PREFECT_API_URL"]
        auth = env.get("PREFECT_API_AUTH_STRING")  # a locked server (basic auth)
        self.auth = tuple(auth.split(":", 1)) if auth else None

    def request(self, method: str, path: str, body: dict | None = None):
        response = httpx.request(method, f"{self.url}{path}", json=body, auth=self.auth, timeout=60)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict):
        return self.request("POST", path, body)

    def flow_run(self, flow_run_id: str) -> dict:
        return self.request("GET", f"/flow_runs/{flow_run_id}")

    def flow_runs(self, deployment: str) -> list[dict]:
        body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 50}
        return self.post("/flow_runs/filter", body)

    def events(self, name: str, since: datetime) -> list[dict]:
        body = {"filter": {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}}, "limit": 50}
        return self.post("/events/filter", body)["events"]

    def artifact(self, flow_run_id: str, key_suffix: str) -> dict | None:
        """The flow run's artifact whose key ends with `key_suffix`."""
        found = self.post("/artifacts/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        return next((a for a in found if (a.get("key") or "").endswith(key_suffix)), None)


def flow_run_id(cli_output: str) -> str:
    """The id `prefect deployment run` prints."""
    return re.search(r"UUID: ([0-9a-f-]{36})", cli_output).group(1)


def wait_for(check, timeout: float, what: str, every: float = 0.5):
    """Poll `check` until it returns something truthy; return that. A request that times out or
    cannot connect (a busy server) is one more poll, not a failure."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except httpx.TransportError as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:.0f}s" + (f" (last error: {last!r})" if last else ""))


def prefect(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def deployed(prefect_server):
    env = dict(prefect_server["env"])
    base = subprocess.run(
        ["bash", str(ROOT / "deployments/docker/base-image.sh")], capture_output=True, text=True, env=env
    )
    assert base.returncode == 0, base.stderr[-2000:]
    env["LIFECYCLE_BASE_IMAGE"] = base.stdout.strip().splitlines()[-1]
    for pool, kind in (("lifecycle-process", "process"), ("lifecycle-docker", "docker")):
        created = prefect(env, "work-pool", "create", pool, "--type", kind)
        assert created.returncode == 0, created.stdout + created.stderr
    started = time.monotonic()
    out = prefect(env, "--no-prompt", "deploy", "--all")
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    print(f"\nprefect deploy --all: {time.monotonic() - started:.0f}s")
    return {**prefect_server, "env": env, "deploy_output": out.stdout}


@pytest.fixture(scope="session")
def process_worker(deployed):
    worker = _spawn(
        [PREFECT, "worker", "start", "--pool", "lifecycle-process"], deployed["env"], deployed["home"] / "worker.log"
    )
    yield deployed
    _stop(worker)
