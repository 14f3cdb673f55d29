"""The main job: every lifecycle phase in order, each a subflow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from flows.cli import run
from flows.evaluate import evaluate
from flows.naming import named_after_config
from flows.package import package
from flows.prepare import prepare
from flows.register import register
from flows.rollout import rollout as roll_out
from flows.train import train
from tasks.outputs import outputs_task
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import LifecycleResult


@flow(name="lifecycle", flow_run_name=named_after_config("lifecycle"))
def lifecycle(
    config: Path,
    source: str | None = None,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    rollout: bool = False,
    target: Literal["docker", "process"] | None = None,
    port: int | None = None,
) -> LifecycleResult:
    """Take a table through the ML lifecycle: prepare → train → evaluate → register → package
    (→ roll-out of the champion behind the stable endpoint).

    Args:
        config: dataset config (YAML) describing the table
        source: read this file or database URI instead of the config's source
        workdir: folder for snapshots, quarantine files, the MLflow database and reports
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        n_trials: override the config's Optuna trial budget
        rollout: also roll the champion out behind the stable endpoint (the `rollout` flow)
        target: the roll-out's docker or process back-end (default: the dataset's `Lifecycle Serving Target` block)
        port: the stable endpoint's port (default: the block's, else 3000)
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
    rolled = None
    if rollout:
        rolled = roll_out(config=config, workdir=workdir, tracking_uri=tracking_uri, target=target, port=port)
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    outputs = outputs_task(tracking, spec.name, workdir, evaluated, registered, rolled)
    return LifecycleResult(
        prepare=prepared, train=trained, evaluate=evaluated, registry=registered, package=packaged,
        rollout=rolled, outputs=outputs,
    )  # fmt: skip


if __name__ == "__main__":
    run(lifecycle)
