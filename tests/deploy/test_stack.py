"""`make stack` for real: server, pools, blocks, deployments, worker, MLflow and Evidently UIs on loopback,
locked with LIFECYCLE_STACK_PASSWORD (401 without it, every run still completes through the
worker); blocks edited through the API change the next run; alerts reach a real HTTP receiver
once; a real headless Chromium logs in and finds the lifecycle run and its artifacts in the
Prefect UI."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIGS, ROOT
from tests.deploy.conftest import PrefectApi, flow_run_id, prefect, wait_for
from tests.serving.server import free_port

STACK = ROOT / "deployments" / "stack.sh"
DATASET = "telco_churn"
PASSWORD = secrets.token_urlsafe(16)  # the whole stack runs locked: the lock costs no second stack


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint that records every notification it is sent."""

    def __init__(self):
        self.calls: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler):  # noqa: N805
                body = handler.rfile.read(int(handler.headers.get("content-length", 0)))
                self.calls.append({"path": handler.path, **json.loads(body or b"{}")})
                handler.send_response(200)
                handler.end_headers()

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"

    def subjects(self, pattern: str) -> list[str]:
        return [c["subject"] for c in self.calls if re.search(pattern, c.get("subject", ""))]


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def stack(receiver, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port()), "EVIDENTLY_PORT": str(free_port())}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= ports | {
        "STACK_DIR": str(folder / ".stack"),
        "WORKDIR": str(folder / "work"),
        "LIFECYCLE_ALERT_WEBHOOK_URL": receiver.url,
        "LIFECYCLE_STACK_PASSWORD": PASSWORD,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    started = time.monotonic()
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=900)
    print(f"\nstack up: {time.monotonic() - started:.0f}s")
    try:
        assert up.returncode == 0, (up.stdout + up.stderr)[-5000:]
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"
        env["PREFECT_API_AUTH_STRING"] = f"admin:{PASSWORD}"  # what the stack's own clients use
        yield {"env": env, "work": folder / "work", "stack_dir": folder / ".stack", "up": up.stdout, **ports}
    finally:
        down = subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=120)
        print(down.stdout)


def python(stack, code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=stack["env"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def artifact(stack, run: str, suffix: str) -> str:
    return PrefectApi(stack["env"]).artifact(run, suffix)["data"]


@pytest.fixture(scope="module")
def lifecycle_run(stack):
    """`prefect deployment run` of the lifecycle deployment, through the stack's worker."""
    started = time.monotonic()
    args = ["--param", f"workdir={stack['work']}", "--param", "n_trials=5"]
    out = prefect(stack["env"], "deployment", "run", "lifecycle/lifecycle", *args, "--watch")
    worker_log = (stack["stack_dir"] / "worker.log").read_text()[-3000:]
    assert out.returncode == 0 and "Completed" in out.stdout, out.stdout[-3000:] + worker_log
    print(f"\nlifecycle deployment through the stack's worker: {time.monotonic() - started:.0f}s")
    return flow_run_id(out.stdout)


def test_make_stack_serves_prefect_mlflow_and_runs_the_lifecycle(stack, lifecycle_run):
    assert f"http://127.0.0.1:{stack['PREFECT_PORT']}" in stack["up"] and "make stack-down" in stack["up"]
    assert f"Evidently UI http://127.0.0.1:{stack['EVIDENTLY_PORT']}" in stack["up"]
    run = PrefectApi(stack["env"]).flow_run(lifecycle_run)
    assert run["name"] == f"lifecycle-{DATASET}" and "lifecycle" in run["tags"]
    model = httpx.get(
        f"http://127.0.0.1:{stack['MLFLOW_PORT']}/api/2.0/mlflow/registered-models/get",
        params={"name": DATASET},
        auth=("admin", PASSWORD),
    ).json()["registered_model"]
    assert any(a["alias"] == "champion" for a in model["aliases"])  # the MLflow UI reads the stack's database
    outputs = artifact(stack, lifecycle_run, "-outputs")  # the run links to the stack's UIs
    assert f"http://127.0.0.1:{stack['MLFLOW_PORT']}/#/experiments/" in outputs
    assert f"http://127.0.0.1:{stack['EVIDENTLY_PORT']}/projects/" in outputs
    assert f"http://127.0.0.1:{stack['PREFECT_PORT']}/runs/flow-run/{lifecycle_run}" in outputs


def test_the_locked_stack_answers_401_without_the_password(stack, lifecycle_run):
    prefect_url, mlflow_url = stack["env"]["PREFECT_API_URL"], f"http://127.0.0.1:{stack['MLFLOW_PORT']}"
    evidently_url = f"http://127.0.0.1:{stack['EVIDENTLY_PORT']}"
    good, bad = ("admin", PASSWORD), ("admin", PASSWORD + "x")
    checks = {
        "prefect health, none": httpx.get(f"{prefect_url}/health"),  # the open probe
        "prefect flows, none": httpx.post(f"{prefect_url}/flows/filter", json={}),
        "prefect flows, wrong": httpx.post(f"{prefect_url}/flows/filter", json={}, auth=bad),
        "prefect flows, password": httpx.post(f"{prefect_url}/flows/filter", json={}, auth=good),
        "mlflow ui, none": httpx.get(f"{mlflow_url}/"),
        "mlflow api, none": httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/search"),
        "mlflow api, wrong": httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/search", auth=bad),
        "mlflow ui, password": httpx.get(f"{mlflow_url}/", auth=good),
        "mlflow api, password": httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/search", auth=good),
        "mlflow health, none": httpx.get(f"{mlflow_url}/health"),
        "evidently ui, none": httpx.get(f"{evidently_url}/"),
        "evidently projects, wrong": httpx.get(f"{evidently_url}/api/v2/projects", auth=bad),
        "evidently projects, password": httpx.get(f"{evidently_url}/api/v2/projects", auth=good),
        "evidently version, none": httpx.get(f"{evidently_url}/api/version"),
    }
    codes = {what: r.status_code for what, r in checks.items()}
    print(f"\nlocked stack: {codes}")
    assert codes == {
        "prefect health, none": 200, "prefect flows, none": 401, "prefect flows, wrong": 401,
        "prefect flows, password": 200, "mlflow ui, none": 401, "mlflow api, none": 401, "mlflow api, wrong": 401,
        "mlflow ui, password": 200, "mlflow api, password": 200, "mlflow health, none": 200,
        "evidently ui, none": 401, "evidently projects, wrong": 401, "evidently projects, password": 200,
        "evidently version, none": 200,
    }  # fmt: skip
    assert checks["mlflow ui, none"].headers["www-authenticate"].startswith("Basic")  # a browser asks
    # MLflow's own client with the documented variables, through the lock
    client_env = stack["env"] | {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    out = subprocess.run(
        [sys.executable, "-c", f"import mlflow; c = mlflow.MlflowClient('{mlflow_url}'); "
         f"print(c.get_registered_model('{DATASET}').name)"],
        env=client_env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == DATASET, out.stderr[-2000:]
    # the password is in no log the stack writes, nor in what `up` printed
    logs = [p for p in stack["stack_dir"].rglob("*.log") if PASSWORD in p.read_text(errors="replace")]
    assert logs == [] and PASSWORD not in stack["up"]


def test_blocks_are_registered_with_default_documents(stack):
    register = prefect(stack["env"], "block", "register", "-m", "blocks")
    assert register.returncode == 0, register.stdout + register.stderr
    for kind in ("Lifecycle Tracking", "Lifecycle Serving Target", "Lifecycle Drift Policy"):
        assert kind in register.stdout
    api = PrefectApi(stack["env"])
    documents = api.post("/block_documents/filter", {"include_secrets": False})
    saved = {(d["block_type"]["slug"], d["name"]) for d in documents}
    for slug in ("lifecycle-tracking", "lifecycle-serving-target", "lifecycle-drift-policy"):
        assert {(slug, "telco-churn"), (slug, "credit-data")} <= saved, saved
    assert ("custom-webhook", "lifecycle-alerts") in saved
    automations = {a["name"] for a in api.post("/automations/filter", {})}
    assert {"retrain-on-drift", "alert-flow-run-failed", "alert-drift-detected"} <= automations, automations


def _set_policy(stack, share: float, prediction_threshold: float | None) -> None:
    python(
        stack,
        "from blocks import DriftPolicySettings as B\n"
        f"b = B.load('telco-churn'); b.drift_share = {share}; b.prediction_threshold = {prediction_threshold}\n"
        "b.save('telco-churn', overwrite=True)",
    )


def test_an_edited_drift_block_changes_the_next_monitor_run_and_drift_alerts_once(stack, lifecycle_run, receiver):
    batches = stack["work"] / "batches"
    sim = [sys.executable, "-m", "tasks.simulate", "--config", str(CONFIGS / "telco_churn.yaml"), "--out", str(batches)]
    subprocess.run(sim, cwd=ROOT, check=True, capture_output=True)
    params = ["--param", f"workdir={stack['work']}", "--param", f"batch={batches / 'drifted.csv'}"]
    try:
        _set_policy(stack, 0.99, 1e6)  # a policy that tolerates these inputs and outputs
        out = prefect(stack["env"], "deployment", "run", "monitor/monitor", *params, "--watch")
        assert out.returncode == 0, out.stdout[-3000:]
        assert "**no_drift**" in artifact(stack, flow_run_id(out.stdout), "-drift-report")
        time.sleep(3)
        assert receiver.subjects("^Drift on") == []
    finally:
        _set_policy(stack, 0.3, None)
    out = prefect(stack["env"], "deployment", "run", "monitor/monitor", *params, "--watch")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "**drift**" in artifact(stack, flow_run_id(out.stdout), "-drift-report")
    wait_for(lambda: receiver.subjects("^Drift on"), 60, "no drift notification")
    time.sleep(5)  # a duplicate would arrive within this
    assert receiver.subjects("^Drift on") == [f"Drift on {DATASET}"]


def test_a_failed_run_sends_exactly_one_notification(stack, receiver):
    params = ["--param", f"workdir={stack['work']}", "--param", "config=configs/no-such-table.yaml"]
    out = prefect(stack["env"], "deployment", "run", "lifecycle/lifecycle", *params, "--watch")
    assert "Failed" in out.stdout, out.stdout[-3000:]
    wait_for(lambda: receiver.subjects(r"^Flow run .* Failed"), 60, "no failure notification")
    time.sleep(5)
    failures = receiver.subjects(r"^Flow run .* Failed")
    assert failures == ["Flow run lifecycle-no-such-table Failed"], failures  # the parent only, not its subflow
    body = next(c["body"] for c in receiver.calls if c["subject"] == failures[0])
    assert "deployment lifecycle" in body and "no-such-table" in body


def test_the_prefect_ui_shows_the_lifecycle_run_and_its_artifacts(stack, lifecycle_run):
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium"
    assert Path(chromium).exists(), "Debian's chromium is needed (.ci/run installs it)"
    base = f"http://127.0.0.1:{stack['PREFECT_PORT']}"
    shots = stack["work"] / "screenshots"
    shots.mkdir(exist_ok=True)
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
    ]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{base}/runs")  # locked: the UI asks for the auth string first
        page.locator("input[type=password]").first.fill(f"admin:{PASSWORD}")
        page.keyboard.press("Enter")
        page.locator("input[type=password]").first.wait_for(state="detached", timeout=30_000)
        page.goto(f"{base}/runs")
        page.get_by_text(f"lifecycle-{DATASET}").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "runs.png"), full_page=True)
        page.goto(f"{base}/runs/flow-run/{lifecycle_run}")  # the run's own page, by the id `deployment run` gave
        page.get_by_text(f"lifecycle-{DATASET}").first.wait_for(timeout=30_000)
        page.get_by_text("Subflow Runs", exact=True).click()
        page.get_by_text(f"prepare-{DATASET}").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "lifecycle-run.png"), full_page=True)
        page.goto(f"{base}/artifacts")
        keys = ["model-card", "test-metrics", "rows", "quarantine", "registry", "drift", "drift-report"]
        for key in keys:
            page.get_by_text(f"telco-churn-{key}", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "artifacts.png"), full_page=True)
        page.get_by_text("telco-churn-drift-report", exact=True).first.click()
        page.get_by_role("link", name=re.compile(r"^[0-9a-f]{8}$")).first.click()  # its latest version
        page.get_by_text("report:", exact=False).first.wait_for(timeout=30_000)
        assert ".html" in page.inner_text("body")
        chart = page.locator("img[src^='data:image/png']").first  # the drift share over the last runs
        chart.wait_for(timeout=30_000)
        assert chart.evaluate("img => img.complete && img.naturalWidth") > 100
        page.screenshot(path=str(shots / "drift-report.png"), full_page=True)
        browser.close()
    print(f"\nscreenshots: {shots}")
    assert (shots / "lifecycle-run.png").stat().st_size > 10_000
