"""Prepare on a table larger than memory: the streaming path (Polars lazy scans, one slice
in memory) vs the in-memory path, on a generated Parquet file (the sample resampled).

    python -m benchmarks.stream --config configs/default.yaml --rows 10000000 --eager-up-to 2000000

Each run is its own process; prints seconds, rows/s, peak RSS and the table's in-memory size.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.measure import ROOT, OutOfMemory, isolated_env, run_measured


def generate(config: Path, rows: int, folder: Path, chunk: int = 1_000_000) -> tuple[Path, float]:
    """The sample resampled to `rows` rows, written chunk by chunk. Returns (config, in-memory MiB)."""
    import pyarrow.parquet as pq
    import yaml

    from tasks.core.spec import load_spec, read_yaml
    from tasks.stores.snapshots import read_source

    spec = load_spec(config)
    raw = read_source(spec)
    data = folder / f"{spec.name}-{rows}.parquet"
    size = 0.0
    writer = None
    for start in range(0, rows, chunk):
        part = raw.sample(min(chunk, rows - start), with_replacement=True, seed=start)
        size += part.estimated_size("mb")
        table = part.to_arrow()
        writer = writer or pq.ParquetWriter(data, table.schema)
        writer.write_table(table, row_group_size=100_000)
    writer.close()
    body = read_yaml(config)
    body["source"] = {"path": str(data)}
    body["quarantine"] = {**(body.get("quarantine") or {}), "duplicates": "keep"}  # resampled: copies by construction
    target = folder / f"{spec.name}-{rows}.yaml"
    target.write_text(yaml.safe_dump(body))
    return target, size


def run_prepare(
    config: Path, workdir: Path, stream_rows: int | None, env: dict, cap: int | None
) -> tuple[float | None, float | None, str]:
    """(seconds, peak RSS MiB, outcome) of one prepare process."""
    cmd = [sys.executable, "-m", "flows.prepare", "--config", str(config), "--workdir", str(workdir)]
    if stream_rows:
        cmd += ["--stream-rows", str(stream_rows)]
    workdir.mkdir(parents=True)
    try:
        return *run_measured(cmd, env, workdir.with_suffix(".log"), memory_cap_mib=cap), "completed"
    except OutOfMemory as exc:
        return None, None, str(exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--stream-rows", type=int, default=250_000)
    parser.add_argument(
        "--eager-up-to", type=int, default=2_000_000,
        help="skip the in-memory path above this size (unless capped: then it runs, and the cap stops it)",
    )  # fmt: skip
    parser.add_argument(
        "--memory-cap-mib", type=int,
        help="run each prepare in a memory cgroup of this size (Linux, root): a process over it is killed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    config, size = generate(args.config.resolve(), args.rows, scratch)
    env = isolated_env(scratch)
    cap = args.memory_cap_mib
    results = [("streaming", *run_prepare(config, scratch / "stream", args.stream_rows, env, cap))]
    if args.rows <= args.eager_up_to or cap:
        results.append(("in memory", *run_prepare(config, scratch / "eager", None, env, cap)))
    print(f"\n## Prepare larger than memory — {args.rows:,} rows ({size:,.0f} MiB as a Polars frame of text)")
    limit = f"{cap:,} MiB (cgroup)" if cap else "none"
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} cores · "
          f"slices of {args.stream_rows:,} rows · memory cap: {limit}\n")  # fmt: skip
    print("| path | outcome | seconds | rows/s | peak RSS MiB | peak RSS / table size |")
    print("|---|---|---:|---:|---:|---:|")
    for name, seconds, peak, outcome in results:
        if seconds is None:
            print(f"| {name} | {outcome} | | | | |")
        else:
            print(f"| {name} | {outcome} | {seconds:.1f} | {args.rows / seconds:,.0f} | {peak:.0f} | "
                  f"{peak / size:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
