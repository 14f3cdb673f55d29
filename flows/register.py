"""Phase 4: register the candidate; move `champion` only when its gate passed."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_run
from tasks.prepare import load_spec_task
from tasks.register import register_task, tracking_task
from tasks.results import RegisterResult


@flow(name="register", flow_run_name=named_after_run("register"))
def register(
    config: Path,
    run_id: str,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
) -> RegisterResult:
    """Register an evaluated candidate as `challenger`, and as `champion` if it passed the gate.

    Args:
        config: dataset config (YAML)
        run_id: MLflow run of the evaluated candidate
        workdir: folder of the default MLflow database
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    return register_task(tracking, run_id)


if __name__ == "__main__":
    run(register)
