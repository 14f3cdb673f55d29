"""The KPI flow's records: Prefect's flow-run history (training and roll-out runs by state), the
live endpoint's /metrics (request latency), the monitor's verdicts in MLflow and the prediction
log (served times). The figures themselves are computed in tasks/core/kpis.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterStartTime,
)
from prometheus_client.parser import text_string_to_metric_families

from tasks.common import UNCACHED, artifact_key
from tasks.core.kpis import KpiFigure, detection_delays, histogram_quantile, judge, retraining_delays, success_rate
from tasks.events import KPI_MISSED, emit_model_event
from tasks.monitor import monitoring_runs
from tasks.results import KpiResult
from tasks.stores.backends import key_headers, read_state
from tasks.stores.registry import TAG_PREFIX, TrackingConfig
from tasks.stores.served import scan_parts
from tasks.stores.workdir import Workdir

MAX_RUNS = 5000  # flow runs read per phase and window
PAGE = 200  # the API's largest page
LATENCY_METRIC = "lifecycle_request_seconds"


def _flow_runs(
    flow: str, prefix: str, since: datetime, workdir: Path
) -> list[tuple[str, datetime | None, datetime | None]]:
    """(state type, start, end) of the runs of `flow` named `<prefix>…` on `workdir` that started
    since `since` (another workdir's runs of the same dataset are another system's)."""
    runs = []
    with get_client(sync_client=True) as client:
        while len(runs) < MAX_RUNS:
            page = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(like_=prefix), start_time=FlowRunFilterStartTime(after_=since)
                ),
                limit=PAGE,
                offset=len(runs),
            )
            runs += page
            if len(page) < PAGE:
                break
    mine = Path(workdir).resolve()
    return [
        (run.state_type.value if run.state_type else "", run.start_time, run.end_time)
        for run in runs
        if run.name.startswith(prefix) and Path(str(run.parameters.get("workdir", "artifacts"))).resolve() == mine
    ]


def _verdicts(cfg: TrackingConfig, dataset: str, since: datetime) -> list[tuple[datetime, str]]:
    """(time, drift status) of the monitor's runs in MLflow since `since`."""
    return [
        (datetime.fromtimestamp(r.info.start_time / 1000, UTC), r.data.tags.get(f"{TAG_PREFIX}drift_status", ""))
        for r in monitoring_runs(cfg, dataset, MAX_RUNS, since)
    ]


def _served_times(workdir: Path, dataset: str, since: datetime) -> list[datetime]:
    scan = scan_parts(Workdir(workdir).prediction_log(dataset))
    if scan is None:
        return []
    times = scan.select("logged_at").filter(pl.col("logged_at") >= since.timestamp()).collect()
    return [datetime.fromtimestamp(t, UTC) for t in times.get_column("logged_at").sort().to_list()]


def _latency_buckets(workdir: Path, dataset: str, api_key=None) -> tuple[list[tuple[float, float]], str]:
    """The live back-ends' request-latency histogram (every endpoint summed), read off /metrics."""
    folders = sorted((Workdir(workdir).root / "serving" / dataset).glob("*/state.json"))
    totals: dict[float, float] = {}
    read = []
    for state_file in folders:
        live = read_state(workdir, dataset, int(state_file.parent.name)).live
        if live is None:
            continue
        try:
            text = httpx.get(f"{live.url}/metrics", headers=key_headers(api_key), timeout=10).text
        except httpx.HTTPError:
            continue
        read.append(live.url)
        for family in text_string_to_metric_families(text):
            if family.name != LATENCY_METRIC:
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    totals[bound] = totals.get(bound, 0.0) + sample.value
    return sorted(totals.items()), ", ".join(read) or "no live endpoint"


@task(name="measure-kpis", **UNCACHED)
def measure_task(
    cfg: TrackingConfig, dataset: str, config_stem: str, workdir: Path, days: float, api_key=None
) -> list[KpiFigure]:
    since = datetime.now(UTC) - timedelta(days=days)
    values = {}
    training = _flow_runs("train", f"train-{dataset}", since, workdir)
    values["training_success_rate"] = success_rate([state for state, _, _ in training])
    rollouts = _flow_runs("rollout", f"rollout-{config_stem}", since, workdir)
    values["deployment_success_rate"] = success_rate([state for state, _, _ in rollouts])
    buckets, where = _latency_buckets(workdir, dataset, api_key)
    p95 = histogram_quantile(0.95, buckets)
    count = int(buckets[-1][1]) if buckets else 0
    values["inference_p95_ms"] = (None if p95 is None else p95 * 1000, f"{count} requests since start ({where})")
    verdicts = _verdicts(cfg, dataset, since)
    detections = detection_delays(verdicts, _served_times(workdir, dataset, since))
    values["drift_detection_hours"] = (
        max(detections) if detections else None,
        f"{len(detections)} drift alarms of {len(verdicts)} monitoring runs",
    )
    triggers = [at for at, status in verdicts if status == "drift"]
    servings = [end for state, _, end in rollouts if state == "COMPLETED" and end is not None]
    retrains = retraining_delays(triggers, servings)
    values["retraining_hours"] = (
        max(retrains) if retrains else None,
        f"{len(retrains)} of {len(triggers)} triggers followed by a new version serving",
    )
    return judge(values)


@task(name="publish-kpis", **UNCACHED)
def publish_task(cfg: TrackingConfig, dataset: str, days: float, figures: list[KpiFigure]) -> KpiResult:
    """A Prefect table, an MLflow run (one point per KPI run) and, for a missed target, one event."""
    from mlflow.entities import Metric, RunTag

    missed = [f.name for f in figures if f.met is False]
    create_table_artifact(
        key=f"{artifact_key(dataset)}-kpis",
        table=[f.model_dump() for f in figures],
        description=f"Success criteria over {days:g} days: " + (f"missed {', '.join(missed)}" if missed else "all met"),
    )
    client = cfg.client()
    run = client.create_run(cfg.experiment_id(f"{cfg.experiment}-kpis"), run_name=f"kpis-{dataset}")
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(f.name, f.value, stamp, 0) for f in figures if f.value is not None],
        tags=[RunTag(f"{TAG_PREFIX}dataset", dataset), RunTag(f"{TAG_PREFIX}kpis_missed", ",".join(missed))],
    )
    client.log_text(run.info.run_id, json.dumps([f.model_dump() for f in figures], indent=2), "kpis.json")
    client.set_terminated(run.info.run_id)
    event_id = None
    if missed:
        payload = {"missed": missed, "figures": [f.model_dump() for f in figures if f.met is False]}
        event_id = emit_model_event(KPI_MISSED, dataset, payload)
        get_run_logger().warning("success criteria missed for %s: %s", dataset, ", ".join(missed))
    return KpiResult(dataset=dataset, days=days, figures=figures, missed=missed, mlflow_run_id=run.info.run_id,
                     event_id=event_id)  # fmt: skip
