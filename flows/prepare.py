"""Phase 1: a raw table → a validated, versioned training snapshot."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.prepare import (
    check_tolerance_task,
    check_trainable_task,
    clean_task,
    features_task,
    fingerprint_task,
    ingest_task,
    load_spec_task,
    profile_task,
    quarantine_task,
    snapshot_task,
    split_task,
    validate_task,
    written_snapshot_task,
)
from tasks.results import PrepareResult
from tasks.stream import stream_snapshot_task


@flow(name="prepare", flow_run_name=named_after_config("prepare"))
def prepare(
    config: Path, source: str | None = None, workdir: Path = Path("artifacts"), stream_rows: int | None = None
) -> PrepareResult:
    """Validate a table against its dataset config and write a training snapshot
    (once per source content and data contract: a re-run reuses the snapshot).

    Args:
        config: dataset config (YAML) describing the table
        source: read this file or database URI instead of the config's source
        workdir: folder for snapshots and quarantine files
        stream_rows: stream a file larger than memory this many rows at a time (Polars lazy scans;
            rows are split by a hash of their content: a stratified or random split, not a time split)
    """
    spec = load_spec_task(config, source)
    fingerprint = fingerprint_task(spec)
    if stream_rows:
        manifest, manifest_path = stream_snapshot_task(spec, fingerprint, workdir, stream_rows)
        return PrepareResult.of(manifest, manifest_path)
    written = written_snapshot_task(spec, fingerprint, workdir)
    if written:
        profile_task(spec, written[1])
        return PrepareResult.of(*written)
    raw = ingest_task(spec, fingerprint)
    failures = validate_task(raw, spec, fingerprint)
    kept, report = quarantine_task(raw, failures, spec, fingerprint, workdir)
    check_tolerance_task(report)
    cleaned = clean_task(kept, spec, fingerprint)
    check_trainable_task(cleaned, spec, fingerprint)
    featured = features_task(cleaned, spec, fingerprint)
    split = split_task(featured, spec, fingerprint)
    manifest, manifest_path = snapshot_task(split, spec, fingerprint, report, workdir)
    profile_task(spec, manifest_path, cleaned)
    return PrepareResult.of(manifest, manifest_path)


if __name__ == "__main__":
    run(prepare)
