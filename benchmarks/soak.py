"""Soak: mixed good and hostile traffic through the stable endpoint, across a blue/green roll-out.

    python -m benchmarks.soak --config configs/default.yaml --seconds 600

The champion of a workdir (trained here when `--workdir` is not given) is rolled out behind the
nginx stable endpoint (`flows.rollout`, process target). Client threads send a seeded mix of
good requests and bad ones (wrong types, unknown fields, over-limit chunked bodies, too many
records, unknown paths, malformed JSON, hostile request ids); half-way the champion is rolled out
again to a fresh back-end while traffic continues. The clients keep the stable endpoint's
keep-alive policy (`tasks.stores.keepalive`): a request whose reused connection a reload of the
proxy closed before any answer is sent once more, and counted apart (`retried_on_reload`).
Printed: answers by kind and status, 5xx and transport errors, RSS of the live back-end and nginx
over time — against the same back-end's RSS after a good-traffic-only warm-up measured in the
same run (the baseline) — and the prediction log's rows against the rows clients received.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import httpx
import polars as pl

from benchmarks.measure import ROOT, copy_trained
from tasks.core.spec import DatasetSpec, load_spec
from tasks.stores import registry
from tasks.stores.backends import free_port, read_state, state_dir, stop_backend
from tasks.stores.keepalive import ReplayableBody, stable_client
from tasks.stores.proxy import proxy_pid, stop_proxy
from tasks.stores.served import read_log
from tasks.stores.snapshots import read_split
from tasks.stores.workdir import Workdir

OVERSIZE_BYTES = 5 * 1024 * 1024
MAX_RECORDS = 1000
SMOKE_ROWS = 20  # rows each roll-out scores on the new back-end before switching (logged too)
# kind → weight of the mix (good traffic first: it is what the service is for)
MIX = {
    "predict": 40,
    "predict_batched": 15,
    "hostile_request_id": 5,
    "wrong_type": 10,
    "unknown_field": 5,
    "too_many_records": 3,
    "oversize_chunked": 2,
    "unknown_path": 15,
    "malformed_json": 5,
}


class Traffic:
    """Client threads; every answer is recorded by kind and status, and every prediction id a client
    received is kept (what the prediction log must hold, no more, no less)."""

    def __init__(self, url: str, spec: DatasetSpec, rows: list[dict], clients: int, seed: int):
        self.url, self.spec, self.rows, self.clients, self.seed = url, spec, rows, clients, seed
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.retried: Counter[str] = Counter()  # kind → requests sent again (keep-alive policy)
        self.received: list[str] = []
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.good_only = threading.Event()
        self.good_only.set()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        kinds, weights = list(MIX), list(MIX.values())
        kind = ""

        def on_retry(request: httpx.Request) -> None:
            with self.lock:
                self.retried[kind] += 1

        with stable_client(self.url, on_retry, timeout=30) as http:
            while not self.stop.is_set():
                kind = rng.choice(["predict", "predict_batched"]) if self.good_only.is_set() else None
                kind = kind or rng.choices(kinds, weights)[0]
                started = time.perf_counter()
                try:
                    response = self.send(http, kind, rng)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.statuses[(kind, f"error: {type(exc).__name__}")] += 1
                    continue
                elapsed = time.perf_counter() - started
                ids = self.prediction_ids(kind, response)
                with self.lock:
                    self.statuses[(kind, response.status_code)] += 1
                    self.received.extend(ids)
                    if kind in ("predict", "predict_batched") and response.status_code == 200:
                        self.latencies.append(elapsed)

    def send(self, http: httpx.Client, kind: str, rng: random.Random) -> httpx.Response:
        some = rng.sample(self.rows, rng.randint(1, 10))
        if kind == "predict":
            return http.post("/predict", json={"records": some})
        if kind == "predict_batched":
            return http.post("/predict_batched", json={"records": some[:1]})
        if kind == "hostile_request_id":
            rid = rng.choice(["<script>alert(1)</script>", "../../etc/passwd", "x" * 8000, "id\twith\ttabs"])
            return http.post("/predict", json={"records": some}, headers={"x-request-id": rid})
        if kind == "wrong_type":
            column = rng.choice(self.spec.base_features)
            bad = dict(some[0]) | {column: rng.choice([[1, 2], {"a": 1}, "not a value", True, -1e300])}
            return http.post("/predict", json={"records": [bad]})
        if kind == "unknown_field":
            return http.post("/predict", json={"records": some, "debug": True})
        if kind == "too_many_records":
            many = [self.rows[i % len(self.rows)] for i in range(MAX_RECORDS + rng.randint(1, 3000))]
            return http.post(rng.choice(["/predict", "/predict_batched"]), json={"records": many})
        if kind == "oversize_chunked":
            chunk = b"[" + b" " * 65535
            body = ReplayableBody(lambda: itertools.repeat(chunk, OVERSIZE_BYTES // len(chunk) + 1))
            request = http.build_request("POST", "/predict", content=body, headers={"content-type": "application/json"})
            request.stream = body  # chunked, and the keep-alive policy may send it again
            return http.send(request)
        if kind == "unknown_path":
            return http.get(f"/{rng.getrandbits(64):x}/{rng.getrandbits(32):x}")
        if kind == "malformed_json":
            return http.post("/predict", content=b'{"records": [', headers={"content-type": "application/json"})
        raise ValueError(kind)

    @staticmethod
    def prediction_ids(kind: str, response: httpx.Response) -> list[str]:
        if response.status_code != 200 or kind in ("unknown_path",):
            return []
        body = response.json()
        predictions = body if isinstance(body, list) else body.get("predictions", [])
        return [p["prediction_id"] for p in predictions]


def tree_rss_mib(pid: int | None) -> float:
    """RSS of a process and its descendants (0 if it is gone)."""
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def run_flow(module: str, *args: str, log: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)
    log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"{module} failed: {(out.stdout + out.stderr)[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--workdir", type=Path, help="a trained workdir (copied; default: train one here)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warm-up", type=float, default=20, help="seconds of good traffic only (the baseline)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    spec = load_spec(args.config)
    scratch = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    work = scratch / "work"
    if args.workdir:
        copy_trained(args.workdir, work)
    else:
        run_flow("flows.lifecycle", "--config", str(args.config), "--workdir", str(work), "--n-trials", "5",
                 log=scratch / "lifecycle.log")  # fmt: skip
    port = free_port()
    common = ("--config", str(args.config), "--workdir", str(work), "--target", "process", "--port", str(port),
              "--smoke-rows", str(SMOKE_ROWS), "--plan", '{"watch_seconds": 0}')  # fmt: skip
    first = run_flow("flows.rollout", *common, log=scratch / "rollout-1.log")
    cfg = registry.default_tracking(work, spec.name, spec.registered_model_name)
    test = read_split(registry.version_manifest(cfg, first["model_version"]), "test")
    rows = test.select(spec.base_features).head(500).to_dicts()

    def live_pid() -> int | None:
        live = read_state(work, spec.name, port).live
        return int(live.ident) if live else None

    nginx = proxy_pid(state_dir(work, spec.name, port))
    traffic = Traffic(f"http://127.0.0.1:{port}", spec, rows, args.clients, args.seed)
    samples: list[tuple[float, float, float]] = []  # (t, backend MiB, nginx MiB)
    rollouts = [first]
    started = time.monotonic()
    traffic.start()
    try:
        time.sleep(args.warm_up)
        baseline = tree_rss_mib(live_pid())
        traffic.good_only.clear()
        rolled = threading.Thread(
            target=lambda: rollouts.append(run_flow("flows.rollout", *common, log=scratch / "rollout-2.log")),
            daemon=True,
        )
        roll_at = started + args.warm_up + (args.seconds - args.warm_up) / 2
        # traffic goes on until the time is up and the roll-out has finished
        while (now := time.monotonic()) < started + args.seconds or rolled.is_alive():
            samples.append((now - started, tree_rss_mib(live_pid()), tree_rss_mib(nginx)))
            if now >= roll_at and rolled.ident is None:
                rolled.start()
            time.sleep(args.sample_every)
        if len(rollouts) != 2:
            raise RuntimeError(f"the roll-out under traffic failed: {(scratch / 'rollout-2.log').read_text()[-3000:]}")
    finally:
        traffic.finish()
        time.sleep(5)  # each worker rolls its log segment into a part every 2 s
        state = read_state(work, spec.name, port)
        if state.live:
            stop_backend(state.live)  # flushes what is buffered
        stop_proxy(state_dir(work, spec.name, port))

    log = read_log(Workdir(work).prediction_log(spec.name))
    logged = log.get_column("prediction_id") if log.height else pl.Series([], dtype=pl.String)
    received = pl.Series(traffic.received, dtype=pl.String)
    smoke = log.filter(~pl.col("prediction_id").is_in(received.implode())).height if log.height else 0
    error_log = state_dir(work, spec.name, port) / "nginx" / "error.log"
    proxy_errors = [line for line in error_log.read_text().splitlines() if "[error]" in line]
    report(args, spec, traffic, samples, baseline, rollouts, logged, received, smoke, proxy_errors)


def report(args, spec, traffic, samples, baseline, rollouts, logged, received, smoke, proxy_errors) -> None:
    print(f"\n## Soak — {spec.name}, {args.seconds:.0f} s, {args.clients} clients, roll-out half-way\n")
    versions = " → ".join(f"v{r['model_version']}" for r in rollouts)
    print(f"roll-outs: {len(rollouts)} ({versions}), each a fresh back-end behind nginx\n")
    print("| kind | status | answers |\n|---|---|---:|")
    for (kind, status), n in sorted(traffic.statuses.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"| {kind} | {status} | {n} |")
    total = sum(traffic.statuses.values())
    server_errors = sum(n for (_, s), n in traffic.statuses.items() if isinstance(s, int) and s >= 500)
    transport = sum(n for (_, s), n in traffic.statuses.items() if not isinstance(s, int))
    retried = sum(traffic.retried.values())
    print(f"\nrequests: {total} · 5xx: {server_errors} · transport errors: {transport} · "
          f"sent once more after a reload closed their keep-alive connection: {retried}"
          + (f" ({', '.join(f'{k} {n}' for k, n in sorted(traffic.retried.items()))})" if retried else ""))  # fmt: skip
    if server_errors:  # what nginx said about them
        print("\nthe proxy's errors:\n```\n" + "\n".join(proxy_errors[-20:]) + "\n```")
    if traffic.latencies:
        lat = sorted(traffic.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"good requests: p50 {statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print("\n| t s | back-end RSS MiB | nginx RSS MiB |\n|---:|---:|---:|")
    step = max(1, len(samples) // 12)
    for t, backend, proxy in samples[::step] + samples[-1:]:
        print(f"| {t:.0f} | {backend:.0f} | {proxy:.1f} |")
    peak = max((b for _, b, _ in samples), default=0.0)
    print(f"\nback-end RSS after the good-only warm-up (baseline): {baseline:.0f} MiB · peak {peak:.0f} MiB · "
          f"growth {peak - baseline:+.0f} MiB")  # fmt: skip
    unique = logged.n_unique() if logged.len() else 0
    missing = received.filter(~received.is_in(logged.implode())).len() if received.len() else 0
    print(f"prediction log: {logged.len()} rows ({unique} unique ids) · rows clients received: {received.len()} · "
          f"received but not logged: {missing} · logged, not received by the soak's clients: {smoke} "
          f"(the roll-outs' smoke rows: {SMOKE_ROWS * len(rollouts)})")  # fmt: skip
    figures = {"requests": total, "5xx": server_errors, "transport_errors": transport, "retried_on_reload": retried,
               "rows_received": received.len(), "rows_logged": logged.len(), "received_not_logged": missing,
               "logged_not_received": smoke, "smoke_rows": SMOKE_ROWS * len(rollouts),
               "rss_baseline_mib": round(baseline, 1), "rss_peak_mib": round(peak, 1)}  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
