"""The data phase: ingest, validate, quarantine, clean, split and snapshot.

Pure functions first (no Prefect, testable on in-memory frames); the `@task`
wrappers the `prepare` flow wires together are at the bottom.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.common import CACHED, UNCACHED, artifact_key, table_row
from tasks.core import features
from tasks.core.cast import clean
from tasks.core.prepare import (
    QuarantineReport,
    assign_splits,
    check_tolerance,
    check_trainable,
    duplicates_policy,
    features_vary,
    find_duplicates,
    split_quarantine,
    target_counts,
    top_failing_checks,
)
from tasks.core.profile import profile_rows
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec, load_spec
from tasks.stores.evidently import write_data_summary
from tasks.stores.snapshots import (
    SnapshotManifest,
    SourceFingerprint,
    atomic_write,
    fingerprint_source,
    load_manifest,
    quarantine_path,
    read_source,
    read_split,
    write_snapshot,
    written_snapshot,
)

# -- Prefect tasks ------------------------------------------------------------------------
load_spec_task = task(name="load-spec", **UNCACHED)(load_spec)


@task(name="fingerprint-source", **UNCACHED)
def fingerprint_task(spec: DatasetSpec) -> SourceFingerprint:
    return fingerprint_source(spec)


@task(name="find-snapshot", **UNCACHED)
def written_snapshot_task(
    spec: DatasetSpec, fingerprint: SourceFingerprint, workdir: Path
) -> tuple[SnapshotManifest, Path] | None:
    """The snapshot of this source and contract if the workdir has it: nothing is read again."""
    found = written_snapshot(spec, fingerprint, workdir)
    if found:
        get_run_logger().info("snapshot %s already written from this source: reusing it", found[0].data_version)
    return found


@task(name="ingest", **CACHED)
def ingest_task(spec: DatasetSpec, fingerprint: SourceFingerprint) -> pl.DataFrame:
    return read_source(spec)


@task(name="validate", **CACHED)
def validate_task(raw: pl.DataFrame, spec: DatasetSpec, fingerprint: SourceFingerprint) -> pl.DataFrame:
    return find_failures(raw, spec)


_DUPLICATES_OUTCOME = {"quarantine": "quarantined", "drop": "dropped", "keep": "kept, each in its first copy's split"}


@task(name="quarantine", **UNCACHED)
def quarantine_task(
    raw: pl.DataFrame,
    failures: pl.DataFrame,
    spec: DatasetSpec,
    fingerprint: SourceFingerprint,
    workdir: Path,
) -> tuple[pl.DataFrame, QuarantineReport]:
    """Write the quarantined rows (always, even none) and report the top failing checks; exact
    duplicate rows are quarantined, dropped or kept as `quarantine.duplicates` says."""
    duplicates = find_duplicates(raw)
    failures, dropped = duplicates_policy(failures, duplicates, spec)
    kept, quarantined = split_quarantine(raw, failures, dropped)
    path = quarantine_path(workdir, spec, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, quarantined.write_parquet)
    report = QuarantineReport(
        path=str(path),
        rows_in=raw.height,
        rows_quarantined=quarantined.height,
        rows_dropped=dropped.len(),
        max_fraction=spec.quarantine.max_fraction,
        top_checks=top_failing_checks(failures),
    )
    if duplicates.height:
        get_run_logger().info(
            "%d rows repeat an earlier row exactly: %s (quarantine.duplicates: %s)",
            duplicates.height, _DUPLICATES_OUTCOME[spec.quarantine.duplicates], spec.quarantine.duplicates,
        )  # fmt: skip
    publish_quarantine(report, spec)
    return kept, report


def publish_quarantine(report: QuarantineReport, spec: DatasetSpec) -> None:
    create_table_artifact(
        key=f"{artifact_key(spec.name)}-quarantine",
        table=[c.model_dump() for c in report.top_checks] or [{"column": "-", "check": "no failures", "rows": 0}],
        description=(
            f"Top quarantine reasons: {report.rows_quarantined} of {report.rows_in} rows "
            f"({report.fraction:.2%}; tolerance {report.max_fraction:.0%}); {report.rows_dropped} exact "
            f"duplicates dropped. File: `{report.path}`"
        ),
    )


@task(name="check-tolerance", **UNCACHED)
def check_tolerance_task(report: QuarantineReport) -> None:
    check_tolerance(report)


@task(name="clean", **CACHED)
def clean_task(kept: pl.DataFrame, spec: DatasetSpec, fingerprint: SourceFingerprint) -> pl.DataFrame:
    return clean(kept, spec)


@task(name="check-trainable", **UNCACHED)
def check_trainable_task(cleaned: pl.DataFrame, spec: DatasetSpec, fingerprint: SourceFingerprint) -> None:
    """Kept targets a model can learn from, and rows that differ (a DataError: never retried)."""
    check_trainable(fingerprint.location, spec, target_counts(cleaned, spec), features_vary(cleaned, spec))


@task(name="features", **CACHED)
def features_task(frame: pl.DataFrame, spec: DatasetSpec, fingerprint: SourceFingerprint) -> pl.DataFrame:
    return features.add_features(frame, spec)


@task(name="split", **CACHED)
def split_task(frame: pl.DataFrame, spec: DatasetSpec, fingerprint: SourceFingerprint) -> pl.DataFrame:
    return assign_splits(frame, spec)


@task(name="write-snapshot", **UNCACHED)
def snapshot_task(
    split_frame: pl.DataFrame,
    spec: DatasetSpec,
    fingerprint: SourceFingerprint,
    quarantine: QuarantineReport,
    workdir: Path,
) -> tuple[SnapshotManifest, Path]:
    manifest, path = write_snapshot(split_frame, spec, fingerprint, quarantine, workdir)
    rows = manifest.rows
    create_table_artifact(
        key=f"{artifact_key(spec.name)}-rows",
        table=[{"stage": k, "rows": v} for k, v in rows.model_dump().items()],
        description=f"Row counts of `{spec.name}` data version `{manifest.data_version}` ({path})",
    )
    create_markdown_artifact(
        key=f"{artifact_key(spec.name)}-snapshot",
        description=f"Snapshot {manifest.data_version}: {rows.rows_kept} rows kept of {rows.rows_in}",
        markdown=(
            f"### Snapshot `{manifest.data_version}` of `{spec.name}`\n\n"
            f"- manifest: `{path}`\n- spec hash: `{manifest.spec_hash}`\n"
            f"- source: `{fingerprint.location}` (sha256 `{fingerprint.sha256[:16]}…`)\n"
            f"- rows in {rows.rows_in} = kept {rows.rows_kept} + quarantined {rows.rows_quarantined}"
            f" + dropped duplicates {rows.rows_dropped}\n"
            f"- train / validation / test: {rows.train} / {rows.validation} / {rows.test}\n"
        ),
    )
    return manifest, path


@task(name="load-manifest", **UNCACHED)
def load_manifest_task(path: Path) -> SnapshotManifest:
    return load_manifest(path)


@task(name="read-split", **UNCACHED)
def read_split_task(manifest_path: Path, split: str) -> pl.DataFrame:
    return read_split(manifest_path, split)


PROFILE_TABLE, PROFILE_REPORT = "profile.json", "profile.html"


@task(name="profile", **UNCACHED)
def profile_task(spec: DatasetSpec, manifest_path: Path, kept: pl.DataFrame | None = None) -> Path:
    """The data profile of a snapshot's kept rows, beside its manifest: a table (`profile.json`)
    and Evidently's data summary (`profile.html`), once per data version; published as a Prefect
    table artifact on every run (a reused snapshot republishes the recorded one)."""
    folder = Path(manifest_path).parent
    table, report = folder / PROFILE_TABLE, folder / PROFILE_REPORT
    if not table.is_file():
        if kept is None:  # a snapshot written before profiles existed: its splits together
            kept = pl.concat([read_split(manifest_path, s) for s in ("train", "validation", "test")], how="diagonal")
        columns = [c for c in spec.input_columns if c in kept.columns]
        write_data_summary(kept.select(columns), report)
        atomic_write(table, lambda p: p.write_text(json.dumps(profile_rows(kept, spec), default=str)))
    rows = json.loads(table.read_text())
    create_table_artifact(
        key=f"{artifact_key(spec.name)}-data-profile",
        table=[table_row(r) for r in rows],
        description=f"Data profile of {spec.name} ({folder.name}): the full report is {report}",
    )
    return report
