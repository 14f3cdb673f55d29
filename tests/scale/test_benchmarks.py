"""The benchmarks run and print their tables (on a tiny table: figures are measured by `make bench`)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import FIXTURES, ROOT

ORDERS = str(FIXTURES / "orders.yaml")


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out.stdout


def test_the_lifecycle_benchmark_compares_flow_and_cached_runs_on_a_running_server_with_bare():
    # the ephemeral-API variant is the same flow (`make run` and the flow tests run it)
    table = _run("benchmarks.lifecycle", "--config", ORDERS, "--runs", "1", "--n-trials", "3",
                 "--variants", "bare", "server")  # fmt: skip
    for row in ("| bare script", "| lifecycle flow, cold, on a running server", "cached re-run, on a running server"):
        assert row in table, table
    assert "| lifecycle flow, cold |" not in table and "on a running server)" in table
    # each side's candidate on the test split: the same budget, split and seed make the same model
    assert "| test roc_auc |" in table, table
    figures = {line.split("|")[1].strip(): float(line.split("|")[-2]) for line in table.splitlines()
               if line.startswith("| bare script") or line.startswith("| lifecycle flow")}  # fmt: skip
    assert len(set(figures.values())) == 1 and 0 <= next(iter(figures.values())) <= 1, figures


def test_the_drift_benchmark_compares_the_monitor_flow_with_bare_evidently(orders_lifecycle):
    _, trained = orders_lifecycle
    table = _run("benchmarks.drift", "--config", ORDERS, "--workdir", str(trained), "--sizes", "400", "--runs", "1")
    assert "| 400 |" in table and "ratio to bare" in table, table


def test_the_stream_benchmark_compares_streaming_with_the_in_memory_path():
    table = _run("benchmarks.stream", "--rows", "200000", "--stream-rows", "50000", "--eager-up-to", "200000")
    assert "| streaming | completed |" in table and "| in memory | completed |" in table, table
