"""The prediction log under real faults, on a real `bentoml serve`: its disk full to the last byte
while requests are answered, and a worker killed (SIGKILL) under steady load. Every answered row is
logged or counted as dropped; `/readyz` shows the failure while it lasts; the server names the dead
worker."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
import psutil

from tasks.core.logs import WAL
from tasks.core.spec import load_spec
from tasks.stores.backends import free_port
from tasks.stores.bento_server import serve_command
from tasks.stores.served import read_log
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS
from tests.disks import fill, small_disk
from tests.serving.server import bento_server, logged_rows, serving, wait_until_ok

TELCO = load_spec(CONFIGS / "telco_churn.yaml")


def _records(result, n: int) -> list[dict]:
    return read_split(result.prepare.manifest_path, "test").select(TELCO.base_features).head(n).to_dicts()


def _dropped(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^lifecycle_log_dropped_rows_total (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _send(url: str, name: str, requests: int, records: list[dict]) -> int:
    """`requests` calls of `records` to /predict (x-request-id `<name>-<n>`), 4 at a time; rows answered 200."""

    def call(n: int) -> int:
        answer = httpx.post(
            f"{url}/predict", json={"records": records}, headers={"x-request-id": f"{name}-{n}"}, timeout=30
        )
        return len(records) if answer.status_code == 200 else 0

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(call, range(requests)))


def _full_disk_episode(url: str, disk: Path, name: str, requests: int, records: list[dict], log: Path) -> int:
    """Requests answered while the log's disk is full; `/readyz` must say so until room returns."""
    filler = fill(disk)
    answered = _send(url, name, requests, records)
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503  # the log is failing: not ready
    filler.unlink()
    wait_until_ok(f"{url}/readyz", 10, lambda: log.read_text()[-3000:])  # writes again by itself
    return answered


def test_a_full_disk_fails_readiness_and_every_answered_row_is_logged_or_counted_dropped(telco_lifecycle, tmp_path):
    result, _ = telco_lifecycle
    records, bound = _records(result, 5), 600
    with small_disk(tmp_path / "disk", "4m") as disk:
        env = {
            "LIFECYCLE_PREDICTION_LOG_DIR": str(disk),
            "LIFECYCLE_LABEL_DIR": str(tmp_path / "labels"),
            "LIFECYCLE_LOG_MAX_PENDING_ROWS": str(bound),
        }
        server_log = tmp_path / "serve.log"
        with bento_server(result.package.bento_tag, server_log, env) as url:
            # 500 rows while the disk is full, within the memory bound: all logged once there is room
            first = _full_disk_episode(url, disk, "within", 100, records, server_log)
            ids = {f"within-{n}" for n in range(100)}
            assert first == 500 and logged_rows(disk, TELCO.name, ids, want=first).height == first
            assert _dropped(url) == 0
            # 1,000 rows while it is full, over the bound: logged + counted as dropped = answered
            second = _full_disk_episode(url, disk, "over", 200, records, server_log)
            ids = {f"over-{n}" for n in range(200)}
            dropped = _dropped(url)
            logged = logged_rows(disk, TELCO.name, ids, want=second - dropped)
            assert second == 1000 and dropped > 0 and logged.height + dropped == second
        logged = read_log(disk / TELCO.name)  # the server stopped: what it held is rolled too
        print(f"full disk: answered {first} + {second}, logged {logged.height}, dropped {dropped:.0f}")
        assert logged.height + dropped == first + second
        assert logged.get_column("prediction_id").n_unique() == logged.height
        assert [p.name for p in disk.rglob(".*")] == []  # no file aside (.tmp) left behind
        assert "prediction log: write failed" in server_log.read_text()


class SteadyClient:
    """A few threads sending one-record /predict calls at ~`rate` a second in all, each on a new
    connection (so every worker gets some) with its own x-request-id; keeps the prediction ids
    answered 200 and the request ids that got no answer."""

    def __init__(self, url: str, records: list[dict], rate: float = 200, threads: int = 4):
        self.url, self.records, self.pause = url, records, threads / rate
        self.received: dict[str, str] = {}  # prediction id → request id
        self.failed: set[str] = set()
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, t: int) -> None:
        n = 0
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop.is_set():
                rid, n = f"steady-{t}-{n}", n + 1
                record = self.records[n % len(self.records)]
                try:
                    answer = client.post(
                        f"{self.url}/predict", json={"records": [record]}, headers={"x-request-id": rid}
                    )
                except httpx.HTTPError:
                    self.failed.add(rid)
                    continue
                self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 200:
                    self.received[answer.json()["predictions"][0]["prediction_id"]] = rid
                else:
                    self.failed.add(rid)
                time.sleep(self.pause)


def _server_process(port: int) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "tasks.stores.bento_server" in cmdline and str(port) in cmdline:
            return process
    raise LookupError(f"no server on port {port}")


def _busiest(log: Path, workers: set[int]) -> int:
    """The worker whose open segment holds the most rows now."""
    sizes = {int(f.name.split("-")[-2]): f.stat().st_size for f in (log / WAL).glob("*.jsonl")}
    return max(workers, key=lambda pid: sizes.get(pid, 0))


def test_a_worker_killed_under_load_loses_no_answered_row_and_the_server_names_it(telco_lifecycle, tmp_path):
    result, _ = telco_lifecycle
    folder, server_log, port = tmp_path / "predictions", tmp_path / "serve.log", free_port()
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(folder), "LIFECYCLE_WORKERS": "2"}
    with serving(serve_command(result.package.bento_tag, "127.0.0.1", port), port, server_log, env) as url:
        workers = {w.pid for w in _server_process(port).children()}
        assert len(workers) == 2, workers
        with SteadyClient(url, _records(result, 50)) as client:
            time.sleep(3)
            victim = _busiest(folder / TELCO.name, workers)
            os.kill(victim, signal.SIGKILL)
            time.sleep(4)
        said = (f"worker pid {victim} is gone", f"worker pid {victim} of")  # the survivor's roll-up, the arbiter
        deadline = time.monotonic() + 30
        while not all(s in server_log.read_text() for s in said) and time.monotonic() < deadline:
            time.sleep(0.5)
    text = server_log.read_text()
    assert re.search(rf"worker pid {victim} of \S+ died \(killed by SIGKILL\)", text), text[-3000:]
    assert re.search(rf"worker pid {victim} is gone; [1-9][0-9]* rows it answered recovered", text), text[-3000:]

    logged = read_log(folder / TELCO.name)
    logged_ids = set(logged.get_column("prediction_id"))
    received = set(client.received)
    recovered = re.search(rf"worker pid {victim} is gone; ([0-9]+) rows", text).group(1)
    print(f"SIGKILL: {len(received)} answered 200, {logged.height} logged ({recovered} recovered from the dead "
          f"worker), {len(client.failed)} requests without an answer")  # fmt: skip
    assert len(received) > 500 and client.statuses.keys() == {200}, client.statuses
    assert received <= logged_ids, f"{len(received - logged_ids)} answered rows missing from the log"
    # a row logged but not received is one whose answer the kill cut off (its client saw an error)
    unanswered = logged.filter(~pl.col("prediction_id").is_in(list(received)))
    assert set(unanswered.get_column("request_id")) <= client.failed
    assert logged.height == logged.get_column("prediction_id").n_unique()
