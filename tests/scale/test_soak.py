"""The soak benchmark's short version: mixed good and hostile traffic through the stable endpoint
across a roll-out leaves no 5xx and no transport error (the clients keep the endpoint's keep-alive
policy: a request a reload cut off unanswered is sent once more, counted apart), logs exactly the
rows clients received — so no request sent again was served twice — and keeps memory bounded."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CONFIGS, ROOT


def test_a_minute_of_hostile_traffic_across_a_roll_out(telco_lifecycle, prefect_api):
    _, trained = telco_lifecycle
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--config", str(CONFIGS / "telco_churn.yaml"),
         "--workdir", str(trained), "--seconds", "60", "--warm-up", "15"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    print(out.stdout)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    table = out.stdout
    assert figures["requests"] > 200, table
    assert figures["5xx"] == 0 and figures["transport_errors"] == 0, table
    assert figures["retried_on_reload"] <= figures["requests"] // 1000, table  # a reload's few, not a storm
    assert figures["rows_received"] > 0 and figures["received_not_logged"] == 0, table
    assert figures["logged_not_received"] == figures["smoke_rows"], table  # only the roll-outs' own checks
    assert figures["rows_logged"] == figures["rows_received"] + figures["smoke_rows"], table
    for kind, status in (("oversize_chunked", 413), ("unknown_path", 404), ("wrong_type", 400),
                         ("unknown_field", 400), ("too_many_records", 400)):  # fmt: skip
        assert f"| {kind} | {status} |" in table, table
    assert figures["rss_peak_mib"] - figures["rss_baseline_mib"] < 200, table
