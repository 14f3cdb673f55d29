"""The main job: every lifecycle phase in order, each a subflow."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.evaluate import evaluate
from flows.naming import named_after_config
from flows.package import package
from flows.prepare import prepare
from flows.register import register
from flows.train import train
from tasks.results import LifecycleResult


@flow(name="lifecycle", flow_run_name=named_after_config("lifecycle"))
def lifecycle(
    config: Path,
    source: str | None = None,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    n_trials: int | None = None,
) -> LifecycleResult:
    """Take a table through the ML lifecycle: prepare → train → evaluate → register → package.

    Args:
        config: dataset config (YAML) describing the table
        source: read this file or database URI instead of the config's source
        workdir: folder for snapshots, quarantine files, the MLflow database and reports
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        n_trials: override the config's Optuna trial budget
    """
    prepared = prepare(config=config, source=source, workdir=workdir)
    trained = train(
        config=config,
        manifest_path=Path(prepared.manifest_path),
        workdir=workdir,
        tracking_uri=tracking_uri,
        n_trials=n_trials,
    )
    evaluated = evaluate(config=config, run_id=trained.run_id, workdir=workdir, tracking_uri=tracking_uri)
    registered = register(config=config, run_id=trained.run_id, workdir=workdir, tracking_uri=tracking_uri)
    packaged = package(config=config, workdir=workdir, tracking_uri=tracking_uri)
    return LifecycleResult(prepare=prepared, train=trained, evaluate=evaluated, registry=registered, package=packaged)


if __name__ == "__main__":
    run(lifecycle)
