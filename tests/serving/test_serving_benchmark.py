"""The serving benchmark runs against a real bento and prints its tables (figures: `make bench-serve`)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import CONFIGS, ROOT


def test_the_serving_benchmark_prints_every_table(telco_lifecycle):
    result, _ = telco_lifecycle
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve", "--config", str(CONFIGS / "telco_churn.yaml"),
         "--bento", result.package.bento_tag, "--clients", "2", "--seconds", "1", "--bulk", "2000", "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    table = out.stdout
    single = re.findall(r"^\| 2 \| (.+?) \| (\d+) \| .* \| (\d+) \| ([\d.]+) \|$", table, re.M)
    assert {name for name, *_ in single} == {
        "bare ASGI + Booster.predict", "bare ASGI + compiled model", "bento /model_info (BentoML floor, no model)",
        "bento /predict", "bento /predict via BentoML IO (FAST_PATH=false)", "bento /predict_batched",
    }, table  # fmt: skip
    assert all(int(rps) > 0 and errors == "0" for _, rps, errors, _ in single), table
    bulk = dict(re.findall(r"^\| 2,000 \| (.+?) \| 1 \| [\d,]+ \| ([\d.]+) \|$", table, re.M))
    assert bulk.keys() == {
        "raw Booster.predict", "raw compiled predict", "bare ASGI /score", "bare ASGI /score, compiled",
        "bento /v1/score_file",
    }, table  # fmt: skip
    assert bulk["raw Booster.predict"] == "1.00" and float(bulk["bento /v1/score_file"]) > 0, table
    assert re.search(r"^\| bento \| [\d,]+ \| \d+ \|$", table, re.M), table
    assert "the bento serves with: compiled (lleaves" in table, table
