"""Labels that arrive later, from a file: validated against the config's target (its labels, or a
finite number within its bounds), bad rows quarantined with their reasons, the rest added to the
label store the monitor and retrain join to the prediction log. (The service's `/feedback` writes
the same store.)"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.common import UNCACHED, artifact_key
from tasks.core.errors import DataError
from tasks.core.feedback import validate_labels
from tasks.core.prepare import frame_digest
from tasks.core.spec import DatasetSpec
from tasks.monitor import read_batch
from tasks.results import LabelsResult
from tasks.stores.served import append_labels
from tasks.stores.snapshots import atomic_write
from tasks.stores.workdir import Workdir


def read_label_file(path: Path) -> pl.DataFrame:
    """The batch reader (CSV/Parquet by suffix; a missing file is a DataError), with unreadable
    bytes a DataError naming the file too: never retried."""
    try:
        return read_batch(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV or Parquet file: {exc}") from exc


@task(name="ingest-labels", **UNCACHED)
def ingest_labels_task(spec: DatasetSpec, path: Path, workdir: Path) -> LabelsResult:
    raw = read_label_file(path)
    try:
        kept, quarantined = validate_labels(raw, spec, source=Path(path).name, received_at=time.time())
    except DataError as exc:  # a file without the columns labels need: name it
        raise DataError(f"{path}: {exc}") from exc
    where = Workdir(workdir)
    quarantine_path = None
    if quarantined.height:
        target = where.quarantine(spec.name, f"labels-{frame_digest(raw)[:16]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, quarantined.write_parquet)
        quarantine_path = str(target.resolve())
        get_run_logger().warning("%d label rows quarantined: %s", quarantined.height, quarantine_path)
    stored = append_labels(where.labels(spec.name), kept)
    result = LabelsResult(
        dataset=spec.name,
        file=str(Path(path).resolve()),
        rows_in=raw.height,
        stored=kept.height,
        quarantined=quarantined.height,
        quarantine_path=quarantine_path,
        stored_path=str(stored) if stored else None,
    )
    create_markdown_artifact(
        key=f"{artifact_key(spec.name)}-labels",
        description=f"{result.stored} labels stored, {result.quarantined} quarantined",
        markdown=f"### Labels from `{result.file}`\n\n- rows: {result.rows_in}\n- stored: {result.stored}\n"
        f"- quarantined: {result.quarantined}" + (f" (`{quarantine_path}`)" if quarantine_path else "") + "\n",
    )
    return result
