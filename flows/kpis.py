"""The success criteria, measured by the system itself: training and deployment success rates,
inference p95, drifted traffic → alarm, retrain trigger → new version serving. A Prefect table,
an MLflow run and, on a missed target, a `model.kpi.missed` event (the alert automation forwards it)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.kpis import measure_task, publish_task
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import KpiResult
from tasks.settings import serving_api_key


@flow(name="kpis", flow_run_name=named_after_config("kpis"))
def kpis(
    config: Path,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    days: float = 30,
) -> KpiResult:
    """Measure the lifecycle's success criteria over the last `days` from its own records.

    Args:
        config: dataset config (YAML)
        workdir: folder of the default MLflow database, the serving state and the prediction log
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        days: the window the figures cover
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    stem = Path(str(config)).resolve().stem  # roll-out runs are named after the config
    figures = measure_task(tracking, spec.name, stem, workdir, days, serving_api_key(spec))
    return publish_task(tracking, spec.name, days, figures)


if __name__ == "__main__":
    run(kpis)
