"""Drift check time vs batch size: the monitor flow (validation, Evidently report, HTML,
Evidently workspace, MLflow run, artifacts) vs a bare Evidently `DataDriftPreset` run on
pandas frames prepared in advance — same reference, same batch, same process, warm.

    python -m benchmarks.drift --config configs/default.yaml --sizes 10000 100000 --runs 3

A champion is trained first with a small budget (the reference is its training split).
Prints medians, the ratio to bare and the peak RSS of each size's process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.measure import ROOT, copy_trained, isolated_env, run_measured
from flows.cli import local_defaults


def measure(config: Path, workdir: Path, size: int, runs: int) -> dict:
    """In this process: warm up once, then time bare Evidently and the monitor flow `runs` times."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from flows.monitor import monitor
    from tasks.core.spec import load_spec
    from tasks.simulate import DriftRecipe, drifted_batch, valid_rows
    from tasks.stores import registry
    from tasks.stores.snapshots import read_split

    spec = load_spec(config)
    cfg = registry.default_tracking(workdir, spec.name, spec.registered_model_name)
    champion = registry.version_by_alias(cfg, "champion")
    reference = read_split(registry.version_manifest(cfg, champion.version), "train")
    batch = drifted_batch(valid_rows(spec), spec, size, 1, DriftRecipe.default(spec))
    path = workdir / f"batch-{size}.parquet"
    batch.write_parquet(path)
    columns = spec.base_features
    ref_pd, cur_pd = reference.select(columns).to_pandas(), batch.select(columns).to_pandas()

    def bare() -> None:
        Report([DataDriftPreset(columns=columns)], include_tests=True).run(current_data=cur_pd, reference_data=ref_pd)

    def flow() -> None:
        monitor(config=config, batch=path, workdir=workdir)

    times = {"bare": [], "flow": []}
    for fn in (bare, flow):
        fn()  # warm-up: imports, first compilation, the ephemeral API
    for _ in range(runs):
        for name, fn in (("bare", bare), ("flow", flow)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="a trained workdir (copied; default: train one here)")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # internal: WORKDIR SIZE
    args = parser.parse_args(argv)
    config = args.config.resolve()
    if args.measure:
        with local_defaults():
            print(json.dumps(measure(config, Path(args.measure[0]), int(args.measure[1]), args.runs)))
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    env = isolated_env(scratch)
    work = scratch / "work"
    if args.workdir:
        copy_trained(args.workdir, work)
    else:
        subprocess.run(
            [sys.executable, "-m", "flows.lifecycle", "--config", str(config), "--workdir", str(work),
             "--n-trials", "5"], env=env, cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, "-m", "benchmarks.drift", "--config", str(config), "--runs", str(args.runs),
               "--measure", str(work), str(size)]  # fmt: skip
        result = scratch / f"measure-{size}.json"
        _, peak = run_measured(cmd, env, scratch / f"measure-{size}.log", stdout=result)
        rows.append((size, json.loads(result.read_text().strip().splitlines()[-1]), peak))

    print(f"\n## Drift check time — {config.stem}, medians of {args.runs} warm runs")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} cores\n")
    print("| batch rows | bare Evidently s | monitor flow s | ratio to bare | overhead s | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, t, peak in rows:
        ratio = t["flow"] / t["bare"]
        print(
            f"| {size:,} | {t['bare']:.2f} | {t['flow']:.2f} | {ratio:.2f} | {t['flow'] - t['bare']:.2f} | {peak:.0f} |"
        )


if __name__ == "__main__":
    main()
