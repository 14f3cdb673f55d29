"""Labels: the truth about served predictions, arriving later as a file → the label store."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.labels import ingest_labels_task
from tasks.prepare import load_spec_task
from tasks.results import LabelsResult


@flow(name="labels", flow_run_name=named_after_config("labels"))
def labels(config: Path, labels: Path, workdir: Path = Path("artifacts")) -> LabelsResult:
    """Add delayed labels to the label store, where monitoring and retraining join them to the
    prediction log.

    Args:
        config: dataset config (YAML)
        labels: CSV/Parquet with `prediction_id` (as the service returned it) or the config's id
            column, the target column (or `label`), and optionally `observed_at` (ISO time or epoch
            seconds). Labels the target does not take (not one of its labels; not a finite number
            within its min/max), or observed more than 5 minutes in the future, are quarantined
            with the reason.
        workdir: folder of the label store and the quarantine
    """
    spec = load_spec_task(config)
    return ingest_labels_task(spec, labels, workdir)


if __name__ == "__main__":
    run(labels)
