"""Sources and snapshots on disk: the source's fingerprint and rows, the train/validation/test
Parquet files with their manifest (written last, atomically), quarantine files."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ValidationError

from tasks.core.errors import DataError, SpecError
from tasks.core.prepare import SPLIT_COLUMN, SPLITS, QuarantineReport, RowCounts, frame_digest
from tasks.core.spec import DatasetSpec
from tasks.core.tables import read_table, require_columns, require_rows
from tasks.stores.workdir import Workdir


class SourceFingerprint(BaseModel):
    """Where the data came from and the sha256 of its content: the cheap cache key."""

    location: str
    sha256: str
    size_bytes: int

    def cache_token(self) -> str:
        return self.sha256


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
    task: str = "binary"  # the target's task kind (manifests written before kinds existed: binary)
    target_values: list[str] | None = None  # a target with a closed set of values (binary: its labels)
    columns: dict[str, str]
    quarantine_path: str
    streamed: bool = False

    def cache_token(self) -> str:
        return f"{self.data_version}:{self.spec_hash}"

    def split_path(self, split: str, root: Path) -> Path:
        return root / self.files[split]


def target_facts(spec: DatasetSpec) -> dict:
    """The manifest's fields about the target: its column, task kind and closed set of values."""
    values = spec.target.as_column().categories
    return {
        "target": spec.target.column,
        "task": spec.target.task,
        "target_values": None if values is None else [str(v) for v in values],
    }


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
        location=redact_uri(src.uri or ""), sha256=frame_digest(frame), size_bytes=frame.estimated_size()
    )


def redact_uri(uri: str) -> str:
    """Drop a password from a database URI before it is logged or stored."""
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)


def read_source(spec: DatasetSpec) -> pl.DataFrame:
    """Read the raw table (CSV values as text, so bad values reach validation); a whole-file problem
    (empty, a header only, ragged rows, not UTF-8, columns missing) is a `DataError` naming the file."""
    src = spec.source
    if src.uri is not None:
        from sqlalchemy import create_engine

        engine = create_engine(src.uri)
        try:
            frame = pl.read_database(src.query, connection=engine)
        finally:
            engine.dispose()
        require_columns(frame.columns, spec.input_columns, "the query's result")
        require_rows(frame, "the query's result")
    else:
        path = spec.resolve(src.path)
        frame = read_table(path, str(path), spec.input_columns, src.file_format)
    return frame.select(spec.input_columns)


def quarantine_path(workdir: Path, spec: DatasetSpec, fingerprint: SourceFingerprint) -> Path:
    return Workdir(workdir).quarantine(spec.name, f"{fingerprint.sha256[:16]}-{spec.spec_hash[:8]}")


def snapshot_dir(workdir: Path, dataset: str, data_version: str) -> Path:
    return Workdir(workdir).snapshot(dataset, data_version)


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
            rows_dropped=quarantine.rows_dropped,
            **{s: int(per_split.get(s, 0)) for s in SPLITS},
        ),
        files={s: f"{s}.parquet" for s in SPLITS},
        feature_names=spec.feature_names,
        **target_facts(spec),
        columns={k: str(v) for k, v in split_frame.drop(SPLIT_COLUMN).schema.items()},
        quarantine_path=quarantine.path,
    )
    if manifest_file.is_file() and all((folder / f).is_file() for f in manifest.files.values()):
        old = SnapshotManifest.model_validate_json(manifest_file.read_text())
        return old, manifest_file
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        part = split_frame.filter(pl.col(SPLIT_COLUMN) == split).drop(SPLIT_COLUMN)
        atomic_write(folder / manifest.files[split], lambda p, part=part: part.write_parquet(p))
    atomic_write(manifest_file, lambda p: p.write_text(manifest.model_dump_json(indent=2)))
    return manifest, manifest_file


def written_snapshot(
    spec: DatasetSpec, fingerprint: SourceFingerprint, workdir: Path
) -> tuple[SnapshotManifest, Path] | None:
    """A complete snapshot already written from these source bytes under this data contract."""
    for manifest_file in sorted(Workdir(workdir).snapshots(spec.name).glob("*/manifest.json")):
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


def atomic_write(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(target)


def load_manifest(path: str | Path) -> SnapshotManifest:
    """The manifest at `path`; a missing or broken one is a DataError naming the file (and, for
    broken JSON, the line and column): a bad file is not retried."""
    try:
        return SnapshotManifest.model_validate_json(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"snapshot manifest not found: {path}") from exc
    except ValidationError as exc:
        raise DataError(f"snapshot manifest {path} is not a valid manifest: {exc}") from exc


def read_split(manifest_path: str | Path, split: str) -> pl.DataFrame:
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    return pl.read_parquet(manifest.split_path(split, manifest_path.parent))
