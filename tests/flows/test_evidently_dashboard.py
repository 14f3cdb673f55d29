"""The Evidently UI over live traffic: a real `bentoml serve` answers simulated customers, their
labels arrive through `/feedback`, and after each of three monitoring runs of the served window a
real `evidently ui` (started before the first run: the project appears while it runs) draws one
more point on every panel of the dataset's dashboard — checked through its HTTP API and in a real
headless Chromium (screenshots kept)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.monitor import monitor
from tasks.core.spec import load_spec
from tasks.simulate import post_labels, sample_batch, send_traffic, valid_rows
from tasks.stores.served import read_log
from tasks.stores.workdir import Workdir
from tests.conftest import CONFIGS
from tests.flows.helpers import artifacts_of
from tests.serving.server import bento_server, free_port, serving

CONFIG = CONFIGS / "telco_churn.yaml"
RUNS, ROWS = 3, 250


@pytest.fixture(scope="module")
def served(telco_lifecycle, tmp_path_factory):
    """A copy of the Telco lifecycle's workdir (no log, labels or monitoring yet), its bento serving
    into it and `evidently ui` on its workspace."""
    result, trained = telco_lifecycle
    workdir = tmp_path_factory.mktemp("telco-dashboard") / "work"
    shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("predictions", "labels", "monitoring"))
    where = Workdir(workdir)
    where.evidently_workspace.mkdir(parents=True)
    ui_port = free_port()
    ui = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(where.evidently_workspace),
          "--host", "127.0.0.1", "--port", str(ui_port)]  # fmt: skip
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(where.predictions), "DO_NOT_TRACK": "1"}
    with (
        serving(ui, ui_port, workdir / "evidently.log", {"DO_NOT_TRACK": "1"}, ready="/api/version") as ui_url,
        bento_server(result.package.bento_tag, workdir / "serve.log", env) as url,
    ):
        yield {"url": url, "ui": ui_url, "workdir": workdir}


def panel_points(ui: str, dataset: str) -> dict[str, list[int]]:
    """Each dashboard panel's points per line, as the UI's own page asks for them."""
    with httpx.Client(base_url=ui, timeout=30) as client:
        project = next(p for p in client.get("/api/v2/projects").json() if p["name"] == dataset)
        dashboard = client.get(f"/api/v2/dashboards/{project['id']}").json()
        points = {}
        for panel in dashboard["panels"]:
            keys = ("metric", "tags", "metadata", "metric_labels")
            body = {"series_filter": [{k: v[k] for k in keys} for v in panel["values"]]}
            data = client.post(f"/api/v2/snapshots/{project['id']}/data_series_batch", json=body).json()
            points[panel["title"]] = [sum(v is not None for v in s["values"]) for s in data["series"]]
        return points | {"__project__": project["id"]}


def test_the_dashboard_draws_a_point_per_monitoring_run_of_served_traffic(served):
    spec, url, workdir = load_spec(CONFIG), served["url"], served["workdir"]
    log = Workdir(workdir).prediction_log(spec.name)
    rows = valid_rows(spec)
    results = []
    for run in range(RUNS):
        answered = send_traffic(url, sample_batch(rows, ROWS, seed=run), spec, batch_size=50)
        deadline = time.monotonic() + 30
        while read_log(log).height < ROWS * (run + 1) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert post_labels(url, answered.head(ROWS // 2), spec) == ROWS // 2  # half the truth arrives
        state = monitor(config=CONFIG, workdir=workdir, return_state=True)
        results.append(state.result())
    report = artifacts_of(state.state_details.flow_run_id)["telco-churn-drift-report"].data
    assert f"Share of drifted columns, last {RUNS} runs" in report and "](data:image/png;base64," in report
    assert [r.rows for r in results] == [ROWS, 2 * ROWS, 3 * ROWS]  # the served window grows
    assert all(r.coverage is not None and r.performance.live is not None for r in results)

    time.sleep(3)  # the UI's watcher picks new snapshots up within ~2 s
    points = panel_points(served["ui"], spec.name)
    project = points.pop("__project__")
    print(f"\npanels: {points}")
    titles = {"Share of drifted columns", "Drift score of the most drifted columns", "Prediction drift score",
              "Null rate of the columns with most nulls", "Label coverage (share of served rows labelled)",
              "Live metric on labelled rows, and on the test split", "Rows"}  # fmt: skip
    assert set(points) == titles
    assert all(lines and set(lines) == {RUNS} for lines in points.values()), points

    from playwright.sync_api import expect, sync_playwright

    chromium = "/usr/bin/chromium"
    assert Path(chromium).exists(), "Debian's chromium is needed (.ci/run installs it)"
    shots = workdir / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 2400})
        page.goto(f"{served['ui']}/projects/{project}")
        drawn = {}
        for title, lines in points.items():
            panel = page.locator(".MuiPaper-root").filter(has=page.get_by_text(title, exact=True))
            marks = panel.locator(".MuiMarkElement-root")  # one mark per point of each line
            expect(marks).to_have_count(RUNS * len(lines), timeout=60_000)
            drawn[title] = marks.count()
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        browser.close()
    print(f"points drawn: {drawn}\nscreenshots: {shots}")
    assert (shots / "dashboard.png").stat().st_size > 20_000
