"""Start a real `bentoml serve` on a free loopback port, stop it, and read its prediction log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl

from tasks.stores.backends import free_port
from tasks.stores.bento_server import serve_command
from tasks.stores.served import read_log

BENTOML = str(Path(sys.executable).with_name("bentoml"))


def wait_until_ok(url: str, timeout: float, why_not, exited=lambda: None) -> None:
    """Poll `url` until it answers 200; on timeout, or when `exited()` returns an exit code,
    fail with `why_not()` (e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        if (code := exited()) is not None:
            raise RuntimeError(f"the server behind {url} exited {code}: {why_not()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s: {why_not()}")
        time.sleep(0.5)


@contextmanager
def serving(
    cmd: list[str], port: int, log_file: Path, env: dict | None = None, timeout: float = 180, cwd=None, ready="/readyz"
):
    """Run `cmd` (a server on loopback `port`) in its own process group; yield its base URL once
    `ready` answers 200; stop the whole group after."""
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            cmd, env=os.environ | (env or {}), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ok(f"{url}{ready}", timeout, lambda: log_file.read_text()[-3000:], proc.poll)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def bento_server(target: str, log_file: Path, env: dict | None = None, timeout: float = 180):
    """`target` is a bento tag (or service path); yields the base URL once /readyz answers 200."""
    port = free_port()
    with serving(serve_command(target, "127.0.0.1", port), port, log_file, env, timeout) as url:
        yield url


def logged_rows(folder: Path, dataset: str, request_ids: set[str], want: int, timeout: float = 30) -> pl.DataFrame:
    """The prediction-log rows of these requests under `folder`, once all `want` of them are in parts
    (each worker rolls its segment every 2 s; `read_log` rolls a dead worker's) or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        frame = read_log(folder / dataset)
        mine = frame.filter(pl.col("request_id").is_in(request_ids)) if frame.height else frame
        if mine.height >= want or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


SPLITS = ("train", "validation", "test")


def assert_served_as_registered(
    url: str, workdir: Path, manifest_path: str, spec, predictor: str = "compiled", splits=SPLITS
) -> int:
    """Every prepared row of the table (of `splits`: train, validation, test), scored by the service through
    `/predict` (1,000 records a call) and `/v1/score_file`, equals the registered champion's
    scores (its task's score column: probabilities, predicted values; its booster, offline) within
    1e-9; the service must be on `predictor` (its compiled model, or the booster). Returns the number
    of rows compared."""
    import io

    import numpy as np

    from tasks.core.task.kinds import task_of
    from tasks.stores import registry
    from tasks.stores.snapshots import read_split

    info = httpx.post(f"{url}/model_info", json={}, timeout=30).json()
    assert info["predictor"].startswith(predictor), info
    table = pl.concat([read_split(manifest_path, split) for split in splits])
    rows, score = table.select(spec.base_features), task_of(spec).score_column
    cfg = registry.default_tracking(workdir, spec.name, spec.registered_model_name)
    offline = registry.load_model(cfg, f"models:/{spec.registered_model_name}@champion").predict_scores(rows)
    served = []
    for start in range(0, rows.height, 1000):
        records = [{k: v for k, v in r.items() if v is not None} for r in rows.slice(start, 1000).to_dicts()]
        response = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
        assert response.status_code == 200, response.text
        served += [p[score] for p in response.json()["predictions"]]
    np.testing.assert_allclose(np.array(served), offline, rtol=0, atol=1e-9)
    body = io.BytesIO()
    rows.write_parquet(body)
    parquet = {"content-type": "application/vnd.apache.parquet"}
    response = httpx.post(f"{url}/v1/score_file", content=body.getvalue(), headers=parquet, timeout=120)
    assert response.status_code == 200 and response.headers["x-rows-rejected"] == "0", response.text
    scored = pl.read_parquet(io.BytesIO(response.content)).sort("row").get_column(score).to_numpy()
    np.testing.assert_allclose(scored, offline, rtol=0, atol=1e-9)
    return rows.height
