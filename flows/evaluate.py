"""Phase 3: the candidate, the baselines and the champion on the same test rows → the gate."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_run
from tasks.evaluate import (
    cross_validate_task,
    explain_task,
    gate_task,
    log_evaluation_task,
    recorded_evaluation_task,
    score_task,
)
from tasks.prepare import load_manifest_task, load_spec_task
from tasks.register import tracking_task, train_result_task
from tasks.results import EvaluationResult
from tasks.stores.workdir import Workdir


@flow(name="evaluate", flow_run_name=named_after_run("evaluate"))
def evaluate(
    config: Path,
    run_id: str,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
) -> EvaluationResult:
    """Score a trained candidate on the untouched test split and apply the promotion gate
    (once per run, config and champion: a re-run reuses the recorded evaluation).

    Args:
        config: dataset config (YAML)
        run_id: MLflow run of the candidate (from the train phase)
        workdir: folder for the default MLflow database and evaluation plots
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    trained = train_result_task(tracking, run_id)
    recorded = recorded_evaluation_task(tracking, spec, trained)
    if recorded:
        return recorded
    manifest = load_manifest_task(trained.manifest_path)
    scores = score_task(tracking, spec, trained, Workdir(workdir).compiled)
    cv = cross_validate_task(tracking, spec, manifest, trained.manifest_path, trained)
    importance, plots = explain_task(tracking, spec, trained, Workdir(workdir).evaluation(run_id))
    decision = gate_task(spec, scores, cv)
    return log_evaluation_task(tracking, spec, trained, scores, cv, importance, plots, decision)


if __name__ == "__main__":
    run(evaluate)
