"""The prepare phase for tables larger than memory: Polars lazy scans read the source a
slice at a time; each slice is validated, quarantined, cleaned, featured, split and written
as Parquet parts, so memory holds one slice, never the table.

The split is by a hash of each row's content (the same row always lands in the same split, so
copies of a row never straddle it; no shuffle of the whole table is needed), for `stratified` and
`random` alike: a row's hash is independent of its target, so every label, every tenth of a
numeric target's range, gets each split's share in expectation (the in-memory shuffle within each
stratum gets it to the row). A `time` split needs every row's time first: it is not streamed.
The data version is the sha256 of the kept rows with their split, like the in-memory path's, so
an unchanged input gives the same version. Exact duplicates across slices are found in one first
pass over two 64-bit hashes of each row (16 bytes a row held, not the rows).
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from tasks.common import UNCACHED
from tasks.core import features
from tasks.core.cast import clean
from tasks.core.errors import DataError, SpecError
from tasks.core.prepare import (
    DUPLICATES_SCHEMA,
    SPLIT_COLUMN,
    SPLITS,
    FailingCheck,
    QuarantineReport,
    RowCounts,
    check_tolerance,
    check_trainable,
    duplicates_policy,
    features_vary,
    merged_counts,
    split_by_position,
    split_quarantine,
    target_counts,
    top_failing_checks,
)
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec
from tasks.core.tables import scan_table
from tasks.prepare import publish_quarantine
from tasks.stores.snapshots import SnapshotManifest, SourceFingerprint, quarantine_path, snapshot_dir, target_facts
from tasks.stores.workdir import Workdir

DEFAULT_SLICE_ROWS = 250_000
STREAMED_SPLITS = ("stratified", "random")  # both by a hash of the row; `time` needs the whole table's order
_HASH_SEED = 20261122


def scan_source(spec: DatasetSpec) -> pl.LazyFrame:
    """A lazy scan of the file source (CSV read as text, so bad values reach validation), after the
    whole-file checks of `tasks.core.tables` (streaming passes: the table is never held)."""
    src = spec.source
    if src.path is None:
        raise SpecError("streaming prepare reads files (CSV or Parquet), not database queries")
    path = spec.resolve(src.path)
    return scan_table(path, str(path), spec.input_columns, src.file_format).select(spec.input_columns)


def assign_splits_by_hash(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Split by a seeded hash of the row: deterministic per row, no whole-table shuffle."""
    position = pl.struct(pl.all()).hash(seed=_HASH_SEED + spec.split.seed) % 1_000_000 / 1_000_000
    return frame.with_columns(split_by_position(position, spec))


def duplicates_by_hash(scan: pl.LazyFrame, spec: DatasetSpec) -> pl.DataFrame:
    """`find_duplicates` for a table read in slices: every copy of an earlier row (all columns equal
    as read), matched on two seeded 64-bit hashes of the row (a false match: ~n²/2¹²⁹). Not needed
    (empty) when the policy keeps copies: the split hash already keeps them together."""
    if spec.quarantine.duplicates == "keep":
        return pl.DataFrame(schema=DUPLICATES_SCHEMA)
    row = pl.struct(pl.all())
    hashes = scan.select(row.hash(_HASH_SEED).alias("h1"), row.hash(_HASH_SEED + 1).alias("h2"))
    return (
        hashes.with_row_index("row")
        .with_columns(pl.col("row").min().over("h1", "h2").alias("first_row"))
        .filter(pl.col("row") != pl.col("first_row"))
        .select("row", "first_row")
        .collect(engine="streaming")
        .cast(DUPLICATES_SCHEMA)
    )


def stream_snapshot(
    spec: DatasetSpec, fingerprint: SourceFingerprint, workdir: Path, slice_rows: int = DEFAULT_SLICE_ROWS
) -> tuple[SnapshotManifest, Path, QuarantineReport]:
    """Write the snapshot slice by slice. Returns (manifest, manifest path, quarantine report)."""
    if spec.split.strategy not in STREAMED_SPLITS:
        raise SpecError(
            f"split.strategy {spec.split.strategy!r} cannot be streamed (rows are split by a hash of their "
            f"content, as {' or '.join(STREAMED_SPLITS)}): prepare this table in memory (no stream_rows)"
        )
    scan = scan_source(spec)
    total = scan.select(pl.len()).collect().item()
    staging = Workdir(workdir).snapshot_staging(spec.name)
    shutil.rmtree(staging, ignore_errors=True)
    for split in SPLITS:
        (staging / split).mkdir(parents=True)
    quarantine = quarantine_path(Path(workdir), spec, fingerprint).with_suffix("")
    shutil.rmtree(quarantine, ignore_errors=True)
    quarantine.mkdir(parents=True)

    duplicates = duplicates_by_hash(scan, spec)
    digest, schema, first_row = None, None, None
    kept_rows, quarantined_rows, dropped_rows = 0, 0, 0
    per_split: Counter[str] = Counter()
    counts = merged_counts([], spec)  # kept rows per target value, merged slice by slice
    checks: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str | None] = {}
    varied = False
    for part, offset in enumerate(range(0, total, slice_rows)):
        raw = scan.slice(offset, slice_rows).collect()
        here = duplicates.filter(pl.col("row").is_between(offset, offset + raw.height - 1))
        failures, dropped = duplicates_policy(
            find_failures(raw, spec), here.with_columns(pl.col("row") - offset), spec
        )  # row numbers of this slice; "duplicate of row N" names the global row
        kept, rejected = split_quarantine(raw, failures, dropped)
        if rejected.height:
            rejected.with_columns(pl.col("source_row") + offset).write_parquet(quarantine / f"part-{part:05d}.parquet")
        for check in top_failing_checks(failures, limit=max(failures.height, 1)):  # every check of this slice
            checks[(check.column, check.check)] += check.rows
            examples.setdefault((check.column, check.check), check.example)
        cleaned = clean(kept, spec)
        counts = merged_counts([counts, target_counts(cleaned, spec)], spec)
        if first_row is None or first_row.is_empty():
            first_row = cleaned.head(1)
        varied = varied or features_vary(pl.concat([first_row, cleaned]), spec)
        split = assign_splits_by_hash(features.add_features(cleaned, spec), spec)
        if digest is None:
            digest = hashlib.sha256(",".join(split.columns).encode())
            schema = {k: str(v) for k, v in split.drop(SPLIT_COLUMN).schema.items()}
        digest.update(split.write_csv(include_header=False).encode())
        for name in SPLITS:
            rows = split.filter(pl.col(SPLIT_COLUMN) == name).drop(SPLIT_COLUMN)
            per_split[name] += rows.height
            rows.write_parquet(staging / name / f"part-{part:05d}.parquet")
        kept_rows += kept.height
        quarantined_rows += rejected.height
        dropped_rows += dropped.len()
        del raw, failures, kept, rejected, cleaned, split

    if kept_rows + quarantined_rows + dropped_rows != total:
        raise AssertionError(
            f"rows lost: {total} in, {kept_rows} kept, {quarantined_rows} quarantined, {dropped_rows} dropped"
        )
    top = sorted(checks.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    report = QuarantineReport(
        path=str(quarantine),
        rows_in=total,
        rows_quarantined=quarantined_rows,
        rows_dropped=dropped_rows,
        max_fraction=spec.quarantine.max_fraction,
        top_checks=[FailingCheck(column=c, check=k, rows=n, example=examples[(c, k)]) for (c, k), n in top],
    )
    version = (digest or hashlib.sha256()).hexdigest()[:16]
    manifest = SnapshotManifest(
        dataset=spec.name,
        data_version=version,
        spec_hash=spec.spec_hash,
        source=fingerprint,
        created_at=datetime.now(UTC),
        rows=RowCounts(
            rows_in=total,
            rows_kept=kept_rows,
            rows_quarantined=quarantined_rows,
            rows_dropped=dropped_rows,
            **per_split,
        ),
        files={split: f"{split}/*.parquet" for split in SPLITS},
        feature_names=spec.feature_names,
        **target_facts(spec),
        columns=schema or {},
        quarantine_path=str(quarantine),
        streamed=True,
    )
    try:  # no snapshot from a table that breaks its contract
        check_tolerance(report)
        check_trainable(fingerprint.location, spec, counts, varied)
    except DataError:
        shutil.rmtree(staging)
        raise
    folder = snapshot_dir(Path(workdir), spec.name, version)
    if (folder / "manifest.json").is_file():
        shutil.rmtree(staging)
        return (
            SnapshotManifest.model_validate_json((folder / "manifest.json").read_text()),
            folder / "manifest.json",
            report,
        )
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return manifest, folder / "manifest.json", report


# -- Prefect task ------------------------------------------------------------------------------
@task(name="stream-snapshot", **UNCACHED)
def stream_snapshot_task(
    spec: DatasetSpec, fingerprint: SourceFingerprint, workdir: Path, slice_rows: int
) -> tuple[SnapshotManifest, Path]:
    """Slice by slice; the quarantine tolerance is checked once every row has been seen."""

    manifest, path, report = stream_snapshot(spec, fingerprint, workdir, slice_rows)
    publish_quarantine(report, spec)
    get_run_logger().info(
        "streamed %d rows in slices of %d: %d kept, %d quarantined → %s",
        report.rows_in, slice_rows, manifest.rows.rows_kept, report.rows_quarantined, manifest.data_version,
    )  # fmt: skip
    return manifest, path
