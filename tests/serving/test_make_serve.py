"""`make serve` as the README runs it: the prediction log lands where `flows.monitor` reads by default."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx

from tasks.core.spec import load_spec
from tasks.stores.backends import free_port
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS, ROOT
from tests.serving.server import logged_rows, serving

TELCO_CONFIG = CONFIGS / "telco_churn.yaml"


def test_make_serve_logs_into_the_workdir_and_monitor_reads_it(telco_lifecycle, prefect_api, tmp_path):
    result, trained = telco_lifecycle
    spec = load_spec(TELCO_CONFIG)
    # the lifecycle's workdir, with no prediction log yet (other tests serve from it too)
    workdir = tmp_path / "workdir"
    shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("predictions"))
    records = read_split(result.prepare.manifest_path, "test").select(spec.base_features).head(13).to_dicts()
    requests = {"make-serve-1": records[:7], "make-serve-2": records[7:12], "make-serve-3": records[12:]}

    port = free_port()
    make = ["make", "serve", f"CONFIG={TELCO_CONFIG}", f"WORKDIR={workdir}", f"PORT={port}"]
    with serving(make, port, tmp_path / "serve.log", cwd=ROOT, timeout=300) as url:
        for request_id, rows in requests.items():
            answer = httpx.post(
                f"{url}/predict", json={"records": rows}, headers={"x-request-id": request_id}, timeout=30
            )
            assert answer.status_code == 200, answer.text
        logged = logged_rows(workdir / "predictions", spec.name, set(requests), want=len(records))

    assert logged.height == len(records)
    # the workdir's champion answers, not the store's newest bento (other tests build newer ones)
    assert set(logged["model_version"]) == {result.registry.champion_version}
    assert logged.group_by("request_id").len().sort("request_id").rows() == [(k, len(v)) for k, v in requests.items()]
    every_file = list((workdir / "predictions").rglob("*.parquet"))
    assert every_file and all(p.is_relative_to(workdir / "predictions" / spec.name) for p in every_file)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_API_URL": prefect_api["api_url"]
    }
    monitor = subprocess.run(
        [sys.executable, "-m", "flows.monitor", "--config", str(TELCO_CONFIG), "--workdir", str(workdir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert monitor.returncode == 0, monitor.stdout[-2000:] + monitor.stderr[-3000:]
    checked = json.loads(monitor.stdout.strip().splitlines()[-1])
    assert checked["batch"] is None  # the champion's served window of the workdir's log
    assert checked["window"]["model_version"] == result.registry.champion_version
    assert checked["rows"] == len(records) and checked["rows_quarantined"] == 0
    assert checked["coverage"]["labelled"] == 0
