"""The data phase: ingest, validate, quarantine, clean, split and snapshot.

Pure functions first (no Prefect, testable on in-memory frames); the `@task`
wrappers the `prepare` flow wires together are at the bottom.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel

from tasks import features
from tasks.common import CACHED, UNCACHED, artifact_key
from tasks.errors import QuarantineToleranceExceeded, SpecError
from tasks.spec import DatasetSpec, clean, find_failures, load_spec

SPLITS = ("train", "validation", "test")
SPLIT_COLUMN = "_split"
_CHUNK_ROWS = 200_000


# -- typed results -----------------------------------------------------------------------
class SourceFingerprint(BaseModel):
    """Where the data came from and the sha256 of its content: the cheap cache key."""

    location: str
    sha256: str
    size_bytes: int

    def cache_token(self) -> str:
        return self.sha256


class RowCounts(BaseModel):
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    train: int = 0
    validation: int = 0
    test: int = 0


class FailingCheck(BaseModel):
    column: str
    check: str
    rows: int
    example: str | None


class QuarantineReport(BaseModel):
    path: str
    rows_in: int
    rows_quarantined: int
    max_fraction: float
    top_checks: list[FailingCheck]

    @property
    def fraction(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


class SnapshotManifest(BaseModel):
    """What a training snapshot holds; `data_version` is the content hash of its rows."""

    dataset: str
    data_version: str
    spec_hash: str
    source: SourceFingerprint
    created_at: datetime
    rows: RowCounts
    files: dict[str, str]
    feature_names: list[str]
    target: str
    positive_label: str
    columns: dict[str, str]
    quarantine_path: str
    streamed: bool = False

    def cache_token(self) -> str:
        return f"{self.data_version}:{self.spec_hash}"

    def split_path(self, split: str, root: Path) -> Path:
        return root / self.files[split]


# -- ingest -------------------------------------------------------------------------------
def fingerprint_source(spec: DatasetSpec) -> SourceFingerprint:
    """sha256 of the source file's bytes, or of a database query's result."""
    src = spec.source
    if src.path is not None:
        path = spec.resolve(src.path)
        if not path.is_file():
            raise SpecError(f"source file not found: {path}")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return SourceFingerprint(location=str(path), sha256=digest.hexdigest(), size_bytes=path.stat().st_size)
    frame = read_source(spec)
    return SourceFingerprint(
        location=_redact_uri(src.uri or ""), sha256=frame_digest(frame), size_bytes=frame.estimated_size()
    )


def _redact_uri(uri: str) -> str:
    """Drop a password from a database URI before it is logged or stored."""
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)


def read_source(spec: DatasetSpec) -> pl.DataFrame:
    """Read the raw table. CSV columns are read as text so bad values reach validation."""
    src = spec.source
    if src.uri is not None:
        from sqlalchemy import create_engine

        engine = create_engine(src.uri)
        try:
            frame = pl.read_database(src.query, connection=engine)
        finally:
            engine.dispose()
    elif src.file_format == "parquet":
        frame = pl.read_parquet(spec.resolve(src.path))
    else:
        frame = pl.read_csv(spec.resolve(src.path), infer_schema=False)
    missing = [c for c in spec.input_columns if c not in frame.columns]
    if missing:
        raise SpecError(
            f"source {src.path or 'query'} lacks the columns {missing} that the config "
            f"{spec.name!r} declares (it has {frame.columns})"
        )
    return frame.select(spec.input_columns)


def frame_digest(frame: pl.DataFrame) -> str:
    """sha256 of a frame's CSV text, chunk by chunk: stable across library versions."""
    digest = hashlib.sha256(",".join(frame.columns).encode())
    for offset in range(0, frame.height, _CHUNK_ROWS):
        digest.update(frame.slice(offset, _CHUNK_ROWS).write_csv(include_header=False).encode())
    return digest.hexdigest()


# -- validate -----------------------------------------------------------------------------
# -- quarantine ---------------------------------------------------------------------------
def reasons_by_row(failures: pl.DataFrame) -> pl.DataFrame:
    """One row per failing input row: its first reason, and all of them."""
    reason = pl.format("{}: {} (value={})", "column", "check", pl.col("value").fill_null("null"))
    return (
        failures.with_columns(reason.alias("reason"))
        .group_by("row", maintain_order=True)
        .agg(
            pl.col("reason").first(),
            pl.col("column").first().alias("failed_column"),
            pl.col("check").first().alias("failed_check"),
            pl.col("value").first().alias("failed_value"),
            pl.col("reason").alias("all_reasons"),
        )
    )


def split_quarantine(raw: pl.DataFrame, failures: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows, quarantined rows with reasons); together they are exactly the input rows."""
    indexed = raw.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
    reasons = reasons_by_row(failures).rename({"row": "source_row"})
    kept = indexed.join(reasons, on="source_row", how="anti").drop("source_row")
    quarantined = reasons.join(
        indexed.with_columns(pl.all().exclude("source_row").cast(pl.String)), on="source_row", how="left"
    ).sort("source_row")
    if kept.height + quarantined.height != raw.height:
        raise AssertionError(f"rows lost: {raw.height} in, {kept.height} kept, {quarantined.height} quarantined")
    return kept, quarantined


def top_failing_checks(failures: pl.DataFrame, limit: int = 10) -> list[FailingCheck]:
    top = (
        failures.group_by("column", "check")
        .agg(pl.col("row").n_unique().alias("rows"), pl.col("value").first().alias("example"))
        .sort(["rows", "column", "check"], descending=[True, False, False])
        .head(limit)
    )
    return [FailingCheck(**r) for r in top.iter_rows(named=True)]


def quarantine_path(workdir: Path, spec: DatasetSpec, fingerprint: SourceFingerprint) -> Path:
    return workdir / "quarantine" / spec.name / f"{fingerprint.sha256[:16]}-{spec.spec_hash[:8]}.parquet"


def check_tolerance(report: QuarantineReport) -> None:
    """Fail when the share of quarantined rows is above the config's tolerance."""
    if report.fraction <= report.max_fraction:
        return
    top = "; ".join(f"{c.column} {c.check}: {c.rows} rows (e.g. {c.example!r})" for c in report.top_checks[:5])
    raise QuarantineToleranceExceeded(
        f"{report.rows_quarantined} of {report.rows_in} rows ({report.fraction:.1%}) failed validation, "
        f"more than the tolerated {report.max_fraction:.1%}. Top failing checks: {top}. "
        f"Quarantined rows and reasons: {report.path}"
    )


# -- clean, split, snapshot ---------------------------------------------------------------
def assign_splits(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Add the split column: stratified on the target (seeded), or by event time (latest rows last)."""
    val, test = spec.split.validation, spec.split.test
    if spec.split.strategy == "time":
        ordered = frame.sort(spec.event_time_column, maintain_order=True)
        position = pl.int_range(pl.len()) / pl.len()
        label = (
            pl.when(position >= 1 - test)
            .then(pl.lit("test"))
            .when(position >= 1 - test - val)
            .then(pl.lit("validation"))
            .otherwise(pl.lit("train"))
        )
        return ordered.with_columns(label.alias(SPLIT_COLUMN))
    target = spec.target.column
    rank = pl.int_range(pl.len()).shuffle(seed=spec.split.seed).over(target)
    return frame.with_columns(split_by_position(rank / pl.len().over(target), spec))


def split_by_position(position: pl.Expr, spec: DatasetSpec) -> pl.Expr:
    """The split column from a position in [0, 1): the first `test` share is test, then validation."""
    test, val = spec.split.test, spec.split.validation
    label = (
        pl.when(position < test)
        .then(pl.lit("test"))
        .when(position < test + val)
        .then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )
    return label.alias(SPLIT_COLUMN)


def snapshot_dir(workdir: Path, dataset: str, data_version: str) -> Path:
    return workdir / "snapshots" / dataset / data_version


def write_snapshot(
    split_frame: pl.DataFrame,
    spec: DatasetSpec,
    fingerprint: SourceFingerprint,
    quarantine: QuarantineReport,
    workdir: Path,
) -> tuple[SnapshotManifest, Path]:
    """Write train/validation/test Parquet files and the manifest (written last).

    The data version is the content hash of the rows with their split, so an
    unchanged input gives the same folder and the write is skipped."""
    version = frame_digest(split_frame)[:16]
    folder = snapshot_dir(workdir, spec.name, version)
    manifest_file = folder / "manifest.json"
    counts = split_frame.get_column(SPLIT_COLUMN).value_counts()
    per_split = dict(zip(counts.get_column(SPLIT_COLUMN), counts.get_column("count"), strict=True))
    manifest = SnapshotManifest(
        dataset=spec.name,
        data_version=version,
        spec_hash=spec.spec_hash,
        source=fingerprint,
        created_at=datetime.now(UTC),
        rows=RowCounts(
            rows_in=quarantine.rows_in,
            rows_kept=split_frame.height,
            rows_quarantined=quarantine.rows_quarantined,
            **{s: int(per_split.get(s, 0)) for s in SPLITS},
        ),
        files={s: f"{s}.parquet" for s in SPLITS},
        feature_names=spec.feature_names,
        target=spec.target.column,
        positive_label=spec.target.positive,
        columns={k: str(v) for k, v in split_frame.drop(SPLIT_COLUMN).schema.items()},
        quarantine_path=quarantine.path,
    )
    if manifest_file.is_file() and all((folder / f).is_file() for f in manifest.files.values()):
        old = SnapshotManifest.model_validate_json(manifest_file.read_text())
        return old, manifest_file
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        part = split_frame.filter(pl.col(SPLIT_COLUMN) == split).drop(SPLIT_COLUMN)
        _atomic_write(folder / manifest.files[split], lambda p, part=part: part.write_parquet(p))
    _atomic_write(manifest_file, lambda p: p.write_text(manifest.model_dump_json(indent=2)))
    return manifest, manifest_file


def written_snapshot(
    spec: DatasetSpec, fingerprint: SourceFingerprint, workdir: Path
) -> tuple[SnapshotManifest, Path] | None:
    """A complete snapshot already written from these source bytes under this data contract."""
    for manifest_file in sorted((Path(workdir) / "snapshots" / spec.name).glob("*/manifest.json")):
        manifest = load_manifest(manifest_file)
        if (
            manifest.source.sha256 == fingerprint.sha256
            and manifest.spec_hash == spec.spec_hash
            and not manifest.streamed
            and all((manifest_file.parent / f).is_file() for f in manifest.files.values())
            and Path(manifest.quarantine_path).is_file()
        ):
            return manifest, manifest_file
    return None


def _atomic_write(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(target)


def load_manifest(path: str | Path) -> SnapshotManifest:
    return SnapshotManifest.model_validate_json(Path(path).read_text())


def read_split(manifest_path: str | Path, split: str) -> pl.DataFrame:
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    return pl.read_parquet(manifest.split_path(split, manifest_path.parent))


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


@task(name="quarantine", **UNCACHED)
def quarantine_task(
    raw: pl.DataFrame,
    failures: pl.DataFrame,
    spec: DatasetSpec,
    fingerprint: SourceFingerprint,
    workdir: Path,
) -> tuple[pl.DataFrame, QuarantineReport]:
    """Write the quarantined rows (always, even none) and report the top failing checks."""
    kept, quarantined = split_quarantine(raw, failures)
    path = quarantine_path(workdir, spec, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, quarantined.write_parquet)
    report = QuarantineReport(
        path=str(path),
        rows_in=raw.height,
        rows_quarantined=quarantined.height,
        max_fraction=spec.quarantine.max_fraction,
        top_checks=top_failing_checks(failures),
    )
    _publish_quarantine(report, spec)
    return kept, report


def _publish_quarantine(report: QuarantineReport, spec: DatasetSpec) -> None:
    create_table_artifact(
        key=f"{artifact_key(spec.name)}-quarantine",
        table=[c.model_dump() for c in report.top_checks] or [{"column": "-", "check": "no failures", "rows": 0}],
        description=(
            f"Top quarantine reasons: {report.rows_quarantined} of {report.rows_in} rows "
            f"({report.fraction:.2%}; tolerance {report.max_fraction:.0%}). File: `{report.path}`"
        ),
    )


@task(name="check-tolerance", **UNCACHED)
def check_tolerance_task(report: QuarantineReport) -> None:
    check_tolerance(report)


@task(name="clean", **CACHED)
def clean_task(kept: pl.DataFrame, spec: DatasetSpec, fingerprint: SourceFingerprint) -> pl.DataFrame:
    return clean(kept, spec)


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
            f"- rows in {rows.rows_in} = kept {rows.rows_kept} + quarantined {rows.rows_quarantined}\n"
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
