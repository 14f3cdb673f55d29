"""`make stack` for real: server, pools, blocks, deployments, worker, MLflow and Evidently UIs on loopback,
locked with LIFECYCLE_STACK_PASSWORD (401 without it, every run still completes through the
worker). On it, the lifecycle deployment rolls the champion out behind a stable endpoint; served
traffic and three monitoring runs draw three points on every panel of the Evidently dashboard
(HTTP API and a real headless Chromium); blocks edited through the API change the next run;
drifted traffic raises one alert and a retrain; alerts reach a real HTTP receiver once; the KPI
flow counts what happened (checked against the Prefect API) and alerts once; Chromium finds the
lifecycle run and its artifacts in the Prefect UI."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tasks.core.spec import load_spec
from tasks.simulate import DriftRecipe, drifted_batch, post_labels, sample_batch, send_traffic, valid_rows
from tasks.stores.backends import read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tasks.stores.served import read_log
from tasks.stores.workdir import Workdir
from tests.conftest import CONFIGS, ROOT
from tests.deploy.conftest import PrefectApi, flow_run_id, prefect, wait_for
from tests.serving.server import free_port

STACK = ROOT / "deployments" / "stack.sh"
DATASET = "telco_churn"
CONFIG = CONFIGS / "telco_churn.yaml"
SPEC = load_spec(CONFIG)
PASSWORD = secrets.token_urlsafe(16)  # the whole stack runs locked: the lock costs no second stack
CHROMIUM = "/usr/bin/chromium"  # Debian's (.ci/run installs it)
BROWSER_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


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
    """`prefect deployment run` of the lifecycle deployment through the stack's worker, rolling the
    champion out behind a stable endpoint (process back-ends); stopped when the module ends."""
    started, port = time.monotonic(), free_port()
    args = ["--param", f"workdir={stack['work']}", "--param", "n_trials=5", "--param", "rollout=true",
            "--param", "target=process", "--param", f"port={port}"]  # fmt: skip
    try:
        out = prefect(stack["env"], "deployment", "run", "lifecycle/lifecycle", *args, "--watch")
        worker_log = (stack["stack_dir"] / "worker.log").read_text()[-3000:]
        assert out.returncode == 0 and "Completed" in out.stdout, out.stdout[-3000:] + worker_log
        print(f"\nlifecycle deployment through the stack's worker: {time.monotonic() - started:.0f}s")
        stack["port"], stack["endpoint"] = port, f"http://127.0.0.1:{port}"
        yield flow_run_id(out.stdout)
    finally:
        state = read_state(stack["work"], DATASET, port)  # what the roll-outs left serving
        if state.live:
            stop_backend(state.live)
        stop_proxy(state_dir(stack["work"], DATASET, port))


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
    assert stack["endpoint"] in outputs and httpx.get(f"{stack['endpoint']}/readyz").status_code == 200


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


RUNS, ROWS = 3, 250  # monitoring runs of served traffic, rows served before each
PANELS = {"Share of drifted columns", "Drift score of the most drifted columns", "Prediction drift score",
          "Null rate of the columns with most nulls", "Label coverage (share of served rows labelled)",
          "Live metric on labelled rows, and on the test split", "Rows"}  # fmt: skip
TARGET_PANEL = "Target drift score (arrived labels vs training)"  # once `min_rows` labels arrived


def monitor_run(stack, *params: str) -> str:
    """`prefect deployment run` of the monitor deployment through the worker; its flow-run id."""
    out = prefect(stack["env"], "deployment", "run", "monitor/monitor", "--param", f"workdir={stack['work']}",
                  *params, "--watch")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    return flow_run_id(out.stdout)


def wait_logged(stack, rows: int) -> None:
    log = Workdir(stack["work"]).prediction_log(DATASET)
    wait_for(lambda: read_log(log).height >= rows, 30, f"fewer than {rows} rows in the prediction log")


def panel_points(ui: str, auth) -> dict[str, list[int]]:
    """Each panel of the dataset's dashboard: its points per line, as the UI's own page asks for them."""
    with httpx.Client(base_url=ui, timeout=30, auth=auth) as client:
        project = next(p for p in client.get("/api/v2/projects").json() if p["name"] == DATASET)
        dashboard = client.get(f"/api/v2/dashboards/{project['id']}").json()
        points = {}
        for panel in dashboard["panels"]:
            keys = ("metric", "tags", "metadata", "metric_labels")
            body = {"series_filter": [{k: v[k] for k in keys} for v in panel["values"]]}
            data = client.post(f"/api/v2/snapshots/{project['id']}/data_series_batch", json=body).json()
            points[panel["title"]] = [sum(v is not None for v in s["values"]) for s in data["series"]]
        return points | {"__project__": project["id"]}


def test_the_evidently_ui_draws_a_point_per_monitoring_run_of_served_traffic(stack, lifecycle_run):
    url, rows = stack["endpoint"], valid_rows(SPEC)
    smoke = read_log(Workdir(stack["work"]).prediction_log(DATASET)).height  # the roll-out's smoke requests
    for run in range(RUNS):  # customers at the stable endpoint, half their truth later, then a monitoring run
        answered = send_traffic(url, sample_batch(rows, ROWS, seed=run), SPEC, batch_size=50)
        wait_logged(stack, smoke + ROWS * (run + 1))
        assert post_labels(url, answered.head(ROWS // 2), SPEC) == ROWS // 2
        report = artifact(stack, monitor_run(stack), "-drift-report")
        assert f"({smoke + ROWS * (run + 1)} valid rows" in report, report[:2000]  # the served window grows
    time.sleep(3)  # the UI's watcher picks new snapshots up within ~2 s
    ui, auth = f"http://127.0.0.1:{stack['EVIDENTLY_PORT']}", ("admin", PASSWORD)
    points = panel_points(ui, auth)
    project = points.pop("__project__")
    print(f"\npanels: {points}")
    judged = sum(ROWS // 2 * (run + 1) >= SPEC.monitoring.min_rows for run in range(RUNS))  # runs with target drift
    assert set(points) == PANELS | ({TARGET_PANEL} if judged else set())
    expected = {title: {judged if title == TARGET_PANEL else RUNS} for title in points}
    assert all(lines and set(lines) == expected[title] for title, lines in points.items()), points

    from playwright.sync_api import expect, sync_playwright

    shots = stack["work"] / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        context = browser.new_context(
            viewport={"width": 1600, "height": 2400}, http_credentials={"username": "admin", "password": PASSWORD}
        )  # the lock asks with Basic auth, as a browser's login box would
        page = context.new_page()
        page.goto(f"{ui}/projects/{project}")
        drawn = {}
        for title, lines in points.items():
            panel = page.locator(".MuiPaper-root").filter(has=page.get_by_text(title, exact=True))
            marks = panel.locator(".MuiMarkElement-root")  # one mark per point of each line
            expect(marks).to_have_count(sum(lines), timeout=60_000)
            drawn[title] = marks.count()
        page.screenshot(path=str(shots / "evidently-dashboard.png"), full_page=True)
        browser.close()
    print(f"points drawn: {drawn}\nscreenshots: {shots}")
    assert (shots / "evidently-dashboard.png").stat().st_size > 20_000


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


DRIFTED = 1500  # drifted rows served after the clean ones: most of the served window


def test_an_edited_drift_block_changes_the_next_monitor_run_and_drift_alerts_once(stack, lifecycle_run, receiver):
    batches = stack["work"] / "batches"
    sim = [sys.executable, "-m", "tasks.simulate", "--config", str(CONFIG), "--out", str(batches)]
    subprocess.run(sim, cwd=ROOT, check=True, capture_output=True)
    try:
        _set_policy(stack, 0.99, 1e6)  # a policy that tolerates these drifted inputs and outputs
        run = monitor_run(stack, "--param", f"batch={batches / 'drifted.csv'}")
        assert "**no_drift**" in artifact(stack, run, "-drift-report")
        time.sleep(3)
        assert receiver.subjects("^Drift on") == []
    finally:
        _set_policy(stack, 0.3, None)
    # then drifted customers at the stable endpoint, with their truth: the scheduled kind of run alarms
    served_before = read_log(Workdir(stack["work"]).prediction_log(DATASET)).height
    drifted = drifted_batch(valid_rows(SPEC), SPEC, DRIFTED, 2, DriftRecipe.default(SPEC))
    stack["drifted_at"] = time.time()  # the KPI flow's drift-detection delay starts at these rows
    answered = send_traffic(stack["endpoint"], drifted, SPEC, batch_size=100)
    wait_logged(stack, served_before + DRIFTED)
    post_labels(stack["endpoint"], answered, SPEC)
    stack["drift_alarm"] = run = monitor_run(stack)
    assert "**drift**" in artifact(stack, run, "-drift-report")
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

    base = f"http://127.0.0.1:{stack['PREFECT_PORT']}"
    shots = stack["work"] / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
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


FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _runs(stack, flow: str, prefix: str) -> list[dict]:
    """The hand check: this stack workdir's runs of `flow` named `prefix…`, straight from the API."""
    body = {"flows": {"name": {"any_": [flow]}}, "flow_runs": {"name": {"like_": prefix}}, "limit": 200}
    runs = PrefectApi(stack["env"]).post("/flow_runs/filter", body)
    mine = lambda run: Path(str(run["parameters"].get("workdir"))).resolve() == stack["work"].resolve()  # noqa: E731
    return [r for r in runs if r["name"].startswith(prefix) and mine(r)]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@pytest.mark.timeout(1800)  # it waits for the drift alarm's retrain (a 50-trial training) to end
def test_the_kpi_flow_counts_what_happened_on_the_stack_and_a_miss_alerts_once(stack, lifecycle_run, receiver):
    env, work, api = stack["env"], stack["work"], PrefectApi(stack["env"])
    retrains = wait_for(  # the drift alarm's retrain, started by the automation, to its end
        lambda: [r for r in api.flow_runs("retrain") if r["state_type"] in FINISHED], 1200, "the retrain's end", every=2
    )
    assert [r["state_type"] for r in retrains] == ["COMPLETED"], retrains
    assert "**promoted**" in api.artifact(retrains[0]["id"], "-retrain")["data"]  # and rolled out to the endpoint
    # a failed training: a trial budget the config rules out (prepare passes; train refuses it, not retried)
    params = ["--param", f"workdir={work}"]
    out = prefect(env, "deployment", "run", "lifecycle/lifecycle", *params, "--param", "n_trials=0", "--watch")
    assert "Failed" in out.stdout, out.stdout[-3000:]
    # a rolled-back roll-out: its new back-end is not ready in time; the live one keeps serving
    params += ["--param", "target=process", "--param", f"port={stack['port']}", "--param", "ready_timeout=0.5"]
    out = prefect(env, "deployment", "run", "rollout/rollout", *params, "--watch")
    assert "Failed" in out.stdout, out.stdout[-3000:]
    send_traffic(stack["endpoint"], sample_batch(valid_rows(SPEC), 200, seed=9), SPEC, batch_size=5)  # 40 timed
    kpis = subprocess.run(
        [sys.executable, "-m", "flows.kpis", "--config", str(CONFIG), "--workdir", str(work), "--days", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert kpis.returncode == 0, (kpis.stdout + kpis.stderr)[-3000:]
    result = json.loads(kpis.stdout.strip().splitlines()[-1])
    figures = {f["name"]: f for f in result["figures"]}
    print("\n" + json.dumps(result["figures"], indent=1))

    trains = [r["state_type"] for r in _runs(stack, "train", f"train-{DATASET}")]
    assert trains.count("FAILED") == 1 and trains.count("COMPLETED") == 2, trains  # the lifecycle's, the retrain's
    assert (
        figures["training_success_rate"]["value"] == pytest.approx(2 / 3)
        and not figures["training_success_rate"]["met"]
    )
    rollouts = _runs(stack, "rollout", "rollout-telco_churn")
    states = sorted(r["state_type"] for r in rollouts)
    assert states.count("FAILED") == 1 and states.count("COMPLETED") == 2, states  # the lifecycle's, the retrain's
    assert figures["deployment_success_rate"]["value"] == pytest.approx(2 / 3)
    latency = figures["inference_p95_ms"]
    assert 0 < latency["value"] < 100 and latency["met"] and int(latency["detail"].split()[0]) >= 40, latency
    # drifted traffic → alarm: from the first drifted row to the alarm's verdict, inside that monitor run
    alarm = api.flow_run(stack["drift_alarm"])
    detected = figures["drift_detection_hours"]["value"] * 3600
    assert (
        _epoch(alarm["start_time"]) - stack["drifted_at"] - 2
        <= detected
        <= _epoch(alarm["end_time"]) - stack["drifted_at"]
    ), (detected, alarm["start_time"], alarm["end_time"])
    # retrain trigger → new version serving: the retrain's roll-out ended within the retrain run
    serving = max(_epoch(r["end_time"]) for r in rollouts if r["state_type"] == "COMPLETED")
    retrained = figures["retraining_hours"]["value"] * 3600
    assert 0 < retrained <= serving - _epoch(alarm["start_time"]) and serving <= _epoch(retrains[0]["end_time"])
    assert figures["retraining_hours"]["met"] and figures["drift_detection_hours"]["met"]

    assert set(result["missed"]) == {"training_success_rate", "deployment_success_rate"}
    subject = f"Success criteria missed on {DATASET}"
    wait_for(lambda: receiver.subjects(f"^{subject}"), 60, "no KPI notification")
    time.sleep(5)  # a duplicate would arrive within this
    (alert,) = receiver.subjects(f"^{subject}")
    assert "training_success_rate" in alert and "deployment_success_rate" in alert
