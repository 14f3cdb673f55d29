"""Serving benchmark: the packaged bento vs a bare ASGI endpoint with the same booster.

    python -m benchmarks.serve --config configs/default.yaml      (or: make bench-serve)

Both servers run on loopback, side by side in the same run, driven by `hey`
(Debian package `hey`) with the same body: single-row requests at 1, 8 and 32
clients, then bulk scoring of 1k and 100k rows (also against in-process
`Booster.predict`), one call at a time and one per worker at once. Prints req/s, p50/p95/p99,
errors and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from benchmarks.measure import ROOT
from tasks.stores.bento_server import serve_command


@contextmanager
def server(cmd: list[str], ready_url: str, env: dict, log: Path, timeout: float = 180):
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(ready_url, timeout=2).status_code in (200, 405):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(log.read_text()[-2000:])
                time.sleep(0.5)
            yield proc
        finally:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def peak_rss_mib(pid: int) -> tuple[float, int]:
    """Sum of the peak RSS (VmHWM) of a process and its descendants, and how many there are."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0
    for p in procs:
        status = Path(f"/proc/{p.pid}/status").read_text()
        total += int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    return total / 1024, len(procs)


def hey(url: str, body: Path, clients: int, seconds: float) -> dict:
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-T", "application/json", "-D", str(body), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {p: float(s) * 1000 for p, s in re.findall(r"\s(\d+)%+ in ([\d.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = sum(n for c, n in codes.items() if c != 200)
    if "Error distribution:" in out:  # connection errors, timeouts
        errors += sum(int(n) for n in re.findall(r"\[(\d+)\]\s", out.split("Error distribution:")[1]))
    return {"rps": rps, "p50": pct.get("50"), "p95": pct.get("95"), "p99": pct.get("99"), "errors": errors}


def export_bare_model(model, spec, folder: Path) -> None:
    """What the bare server needs: the booster, plain lookup tables for the categories, the derived
    features' ops, and the spec and decision its answer is built from."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.txt").write_text(model.booster_text)
    meta = {
        "base_features": spec.base_features,
        "categories": {c: [str(v) for v in spec.columns[c].categories] for c in spec.categorical_features},
        "derived": [(d.op, d.inputs) for d in spec.derived_features],
        "spec": spec.model_dump(mode="json"),
        "decision": model.task.decision_json(model.decision),
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def median_rate(fn, rows: int, repeats: int, at_once: int = 1) -> float:
    """Rows per second of `fn` (which handles `rows` rows), `at_once` calls in flight, by the median
    of `repeats` rounds."""
    with ThreadPoolExecutor(at_once) as pool:

        def one_round() -> None:
            for done in [pool.submit(fn) for _ in range(at_once)]:
                done.result()

        one_round()  # warm up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            one_round()
            times.append(time.perf_counter() - started)
    return rows * at_once / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    import bentoml

    from tasks.core.cast import clean
    from tasks.core.compiled import compiled_for
    from tasks.core.features import feature_matrix
    from tasks.core.spec import load_spec
    from tasks.stores.backends import free_port
    from tasks.stores.bentos import bento_name
    from tasks.stores.snapshots import read_source

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--bento", help="bento tag (default: the latest of the config's service)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--bulk", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--workers", type=int, default=2, help="service workers (bento and baseline)")
    parser.add_argument("--output", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    if not shutil.which("hey"):
        raise SystemExit("needs `hey` (Debian: apt-get install -y hey)")

    spec = load_spec(args.config)
    bento = bentoml.get(args.bento or f"{bento_name(spec)}:latest")
    model_tag = json.loads((Path(bento.path) / "src" / "bundle.json").read_text())["model_tag"]
    model = bentoml.mlflow.load_model(model_tag).unwrap_python_model().model
    table = clean(read_source(spec), spec).select(spec.base_features)
    record = table.row(0, named=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    export_bare_model(model, spec, tmp / "bare")
    compiled, why_not = compiled_for(model.booster_text, tmp / "compiled")  # what the bento serves with
    if compiled is None:
        raise SystemExit(f"no compiled model here ({why_not}): the compiled rows cannot be measured")
    body = tmp / "one.json"
    body.write_text(json.dumps({"records": [record]}))
    bento_port, bare_port, typed_port = free_port(), free_port(), free_port()
    bento_env = {
        "LIFECYCLE_WORKERS": str(args.workers),
        "LIFECYCLE_PREDICTION_LOG_DIR": str(tmp / "predictions"),
    }
    bare_env = {"BARE_MODEL_DIR": str(tmp / "bare"), "PYTHONPATH": str(ROOT)}
    uvicorn = [sys.executable, "-m", "uvicorn", "benchmarks.bare_server:app", "--host", "127.0.0.1"]
    rows: list[dict] = []
    bulk_rows: list[dict] = []
    with ExitStack() as stack:
        bento_proc = stack.enter_context(
            server(
                serve_command(str(bento.tag), "127.0.0.1", bento_port),
                f"http://127.0.0.1:{bento_port}/readyz", bento_env, tmp / "bento.log",
            )
        )  # fmt: skip
        stack.enter_context(  # the same bento with /predict left to BentoML's typed endpoint: the "before"
            server(
                serve_command(str(bento.tag), "127.0.0.1", typed_port),
                f"http://127.0.0.1:{typed_port}/readyz",
                bento_env | {"LIFECYCLE_FAST_PATH": "false", "LIFECYCLE_PREDICTION_LOG_DIR": str(tmp / "typed")},
                tmp / "typed.log",
            )
        )
        bare_proc = stack.enter_context(
            server(
                [*uvicorn, "--port", str(bare_port), "--workers", str(args.workers), "--log-level", "warning"],
                f"http://127.0.0.1:{bare_port}/predict", bare_env, tmp / "bare.log",
            )
        )  # fmt: skip
        empty = tmp / "empty.json"
        empty.write_text("{}")
        targets = {  # name: (url, body)
            "bare ASGI + Booster.predict": (f"http://127.0.0.1:{bare_port}/predict", body),
            "bare ASGI + compiled model": (f"http://127.0.0.1:{bare_port}/predict_compiled", body),
            "bento /model_info (BentoML floor, no model)": (f"http://127.0.0.1:{bento_port}/model_info", empty),
            "bento /predict": (f"http://127.0.0.1:{bento_port}/predict", body),
            "bento /predict via BentoML IO (FAST_PATH=false)": (f"http://127.0.0.1:{typed_port}/predict", body),
            "bento /predict_batched": (f"http://127.0.0.1:{bento_port}/predict_batched", body),
        }
        for clients in args.clients:
            results = {}
            for name, (url, payload) in targets.items():
                hey(url, payload, clients, 2)  # warm up
                results[name] = hey(url, payload, clients, args.seconds)
            base = results["bare ASGI + Booster.predict"]["rps"]
            for name, r in results.items():
                rows.append({"clients": clients, "target": name, **r, "ratio": r["rps"] / base})
        rng = np.random.default_rng(0)
        for n in args.bulk:
            frame = table[rng.integers(0, table.height, n)]
            buffer = io.BytesIO()
            frame.write_parquet(buffer)
            payload = buffer.getvalue()
            matrix = feature_matrix(frame, spec)
            client = httpx.Client(timeout=600)

            def post(url, payload=payload, client=client):
                response = client.post(url, content=payload, headers={"content-type": "application/vnd.apache.parquet"})
                response.raise_for_status()

            repeats = 5 if n <= 10_000 else 3
            # one call at a time, then one per worker: every target at its best use of the cores;
            # the baseline is raw Booster.predict's best (it runs on every core either way)
            bulk_targets = {
                "raw Booster.predict": lambda matrix=matrix: model.booster.predict(matrix),
                "raw compiled predict": lambda matrix=matrix: compiled.predict(matrix),
                "bare ASGI /score": lambda: post(f"http://127.0.0.1:{bare_port}/score"),
                "bare ASGI /score, compiled": lambda: post(f"http://127.0.0.1:{bare_port}/score_compiled"),
                "bento /v1/score_file": lambda: post(f"http://127.0.0.1:{bento_port}/v1/score_file"),
            }
            rates = {
                (name, at_once): median_rate(fn, n, repeats, at_once)
                for name, fn in bulk_targets.items()
                for at_once in sorted({1, args.workers})
            }
            raw = max(rate for (name, _), rate in rates.items() if name == "raw Booster.predict")
            for (name, at_once), rate in rates.items():
                bulk_rows.append(
                    {"rows": n, "target": name, "at_once": at_once, "rows_per_s": rate, "ratio_to_raw": rate / raw}
                )
        memory = {"bento": peak_rss_mib(bento_proc.pid), "bare ASGI": peak_rss_mib(bare_proc.pid)}
        predictor = httpx.post(f"http://127.0.0.1:{bento_port}/model_info", json={}, timeout=30).json()["predictor"]

    report = render(rows, bulk_rows, spec.name, str(bento.tag), args, memory, model.booster.num_trees(), predictor)
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)


def render(rows, bulk_rows, dataset, bento_tag, args, memory, trees, predictor) -> str:
    import importlib.metadata as md

    lines = [
        f"## Serving benchmark — {dataset} ({bento_tag})",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} cores · "
        f"bentoml {md.version('bentoml')} · lightgbm {md.version('lightgbm')} · {args.workers} workers each · "
        f"hey, {args.seconds:g} s per point after a 2 s warm-up, one record per request · model: {trees} trees · "
        f"the bento serves with: {predictor}",
        "",
        "| clients | target | req/s | p50 ms | p95 ms | p99 ms | errors | ratio to bare |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['target']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | "
            f"{r['p99']:.2f} | {r['errors']} | {r['ratio']:.2f} |"
        )
    lines += [
        "",
        "| bulk rows | target | calls at once | rows/s | ratio to raw predict's best |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in bulk_rows:
        lines.append(
            f"| {r['rows']:,} | {r['target']} | {r['at_once']} | {r['rows_per_s']:,.0f} | {r['ratio_to_raw']:.2f} |"
        )
    lines += ["", "| server | peak RSS MiB (sum over its processes) | processes |", "|---|---:|---:|"]
    lines += [f"| {name} | {mib:,.0f} | {n} |" for name, (mib, n) in memory.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
