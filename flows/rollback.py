"""Move the `champion` alias back to the `previous` version."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.prepare import load_spec_task
from tasks.register import rollback_task, tracking_task
from tasks.results import RollbackResult


@flow(name="rollback", flow_run_name=named_after_config("rollback"))
def rollback(config: Path, workdir: Path = Path("artifacts"), tracking_uri: str | None = None) -> RollbackResult:
    """Put the previous champion back.

    Args:
        config: dataset config (YAML)
        workdir: folder of the default MLflow database
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    demoted, restored = rollback_task(tracking)
    return RollbackResult(model_name=spec.registered_model_name, from_version=demoted, to_version=restored)


if __name__ == "__main__":
    run(rollback)
