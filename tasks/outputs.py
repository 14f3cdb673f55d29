"""The lifecycle's outputs in one place: which model (registry name and version, MLflow experiment
and run, artifact), its test metrics, where it serves, and where a person looks (Prefect run,
MLflow run, Evidently project). A link is None when the run does not know that UI's address:
`make stack` tells its worker (LIFECYCLE_MLFLOW_UI_URL, LIFECYCLE_EVIDENTLY_UI_URL)."""

from __future__ import annotations

import os

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.settings import get_current_settings

from tasks.common import UNCACHED, artifact_key
from tasks.results import EvaluationResult, LifecycleOutputs, Links, RegisterResult, RolloutResult
from tasks.stores.evidently import project_id
from tasks.stores.registry import TrackingConfig
from tasks.stores.workdir import Workdir

MLFLOW_UI_ENV = "LIFECYCLE_MLFLOW_UI_URL"
EVIDENTLY_UI_ENV = "LIFECYCLE_EVIDENTLY_UI_URL"


def mlflow_ui(tracking_uri: str, environ=os.environ) -> str | None:
    """The MLflow UI's address: the setting, else a tracking server (it serves its UI too)."""
    if environ.get(MLFLOW_UI_ENV):
        return environ[MLFLOW_UI_ENV].rstrip("/")
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def mlflow_run_link(base: str | None, experiment_id: str, run_id: str) -> str | None:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def prefect_run_link(ui_url: str | None, run_id: str | None) -> str | None:
    return f"{ui_url.rstrip('/')}/runs/flow-run/{run_id}" if ui_url and run_id else None


def artifact_location(client, source: str) -> str:
    """Where a registered version's files are: MLflow 3 registers a logged model (`models:/m-…`),
    whose files sit at its artifact location."""
    if source.startswith("models:/m-"):
        return client.get_logged_model(source.removeprefix("models:/")).artifact_location
    return source


@task(name="lifecycle-outputs", **UNCACHED)
def outputs_task(
    cfg: TrackingConfig,
    dataset: str,
    workdir,
    evaluated: EvaluationResult,
    registered: RegisterResult,
    rolled: RolloutResult | None = None,
) -> LifecycleOutputs:
    client = cfg.client()
    run = client.get_run(evaluated.run_id)
    version = client.get_model_version(registered.model_name, registered.version)
    evidently = os.environ.get(EVIDENTLY_UI_ENV, "").rstrip("/") or None
    project = None
    if evidently:  # the dataset's project, made now so the link opens before the first monitoring run
        project = f"{evidently}/projects/{project_id(Workdir(workdir).evidently_workspace, dataset)}"
    outputs = LifecycleOutputs(
        model_id=f"{registered.model_name}/{registered.version}",
        model_name=registered.model_name,
        model_version=registered.version,
        champion_version=registered.champion_version,
        experiment_id=run.info.experiment_id,
        run_id=evaluated.run_id,
        model_uri=f"models:/{registered.model_name}/{registered.version}",
        artifact_uri=artifact_location(client, version.source),
        metrics=evaluated.candidate,
        endpoint=rolled.endpoint if rolled else None,
        links=Links(
            prefect_run=prefect_run_link(get_current_settings().ui_url, flow_run.get_id()),
            mlflow_run=mlflow_run_link(mlflow_ui(cfg.tracking_uri), run.info.experiment_id, evaluated.run_id),
            evidently_project=project,
        ),
    )
    create_markdown_artifact(
        key=f"{artifact_key(dataset)}-outputs", markdown=outputs_markdown(outputs), description=outputs.model_id
    )
    return outputs


def outputs_markdown(outputs: LifecycleOutputs) -> str:
    def link(url: str | None) -> str:
        return f"[{url}]({url})" if url else "-"

    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(outputs.metrics.items()))
    rows = [
        ("model", f"`{outputs.model_id}` (`{outputs.model_uri}`), champion v{outputs.champion_version or '-'}"),
        ("MLflow", f"experiment `{outputs.experiment_id}`, run `{outputs.run_id}`"),
        ("artifact", f"`{outputs.artifact_uri}`"),
        ("test metrics", metrics or "-"),
        ("endpoint", link(outputs.endpoint)),
        ("Prefect run", link(outputs.links.prefect_run)),
        ("MLflow run", link(outputs.links.mlflow_run)),
        ("Evidently project", link(outputs.links.evidently_project)),
    ]
    return "### Lifecycle outputs\n\n| output | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
