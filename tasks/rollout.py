"""Roll-out tasks: start the new back-end, check it (readiness, smoke rows scored as the
registry's model scores them), optionally serve it on staging and wait for approval, move
traffic to it (one switch, canary steps, or after a shadow phase), watch it, retire the old
one — or, on any failure or guardrail breach, send traffic back, roll the registry back and
say so (the `model.rollout.rolled_back` event). Each step's figures come from what nginx and
the service recorded of the traffic actually served."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field, SecretStr

from tasks.common import UNCACHED, artifact_key
from tasks.core.feedback import ServedWindow
from tasks.core.guardrails import StepReport, Tally, VersionFigures, judge, live_metric, shift_between
from tasks.core.monitoring import live_metric_name
from tasks.core.spec import DatasetSpec, RolloutPlan, StagingSpec
from tasks.core.task.kinds import task_of
from tasks.events import ROLLOUT_ROLLED_BACK, emit_model_event
from tasks.stores.backends import (
    Backend,
    Kind,
    RolloutFailed,
    ServingState,
    container_limits,
    key_headers,
    smoke_test,
    start_backend,
    state_dir,
    stop_backend,
    wait_ready,
    write_state,
)
from tasks.stores.proxy import AccessLog, Lock, Route, point_proxy, stop_proxy, wait_drained, wait_proxy_serves
from tasks.stores.registry import (
    CHAMPION,
    PREVIOUS,
    TAG_PREFIX,
    TrackingConfig,
    load_model,
    rollback,
    set_version_tags,
    version_by_alias,
    version_manifest,
)
from tasks.stores.served import labelled_window, scored_since
from tasks.stores.snapshots import read_split
from tasks.stores.workdir import Workdir


def lock_for(api_key: SecretStr | None) -> Lock | None:
    return Lock.bearer(api_key) if api_key is not None else None


class Approval(RunInput):
    """The answer a staging roll-out waits for (the form the Prefect UI shows on the paused run)."""

    approve: bool = Field(description="serve this version in production")
    note: str = Field(default="", max_length=500)


def step_log(workdir: Path, dataset: str, port: int, name: str) -> AccessLog:
    """A fresh nginx access log per step: the file holds one step's answers, then is removed."""
    folder = state_dir(workdir, dataset, port) / "steps"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace(' ', '-').replace('%', 'pct')}-{time.time_ns()}.jsonl"
    return AccessLog(path)


def _paired(new: pl.DataFrame, old: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of the same request answered by both (shadow), row-aligned: joined on request id and
    row order."""
    keys = ["request_id", "row"]
    rank = pl.int_range(pl.len()).over("request_id").alias("row")
    answered = [c for c in old.columns if c not in keys]
    old = old.with_columns(rank).rename({c: f"{c}_old" for c in answered})
    both = new.with_columns(rank).join(old, on=keys)
    return both.select(new.columns), both.select(pl.col(f"{c}_old").alias(c) for c in answered)


@dataclass(frozen=True)
class Step:
    """One watched stretch of a roll-out: the new version, the old one it is compared with (none
    after the switch), and where each logged what it answered."""

    name: str
    new: Backend
    old: Backend | None
    plan: RolloutPlan
    spec: DatasetSpec
    workdir: Path
    share: float | None = None  # canary: the new version's target share of requests, percent
    paired: bool = False  # shadow: both answered the same requests; the new one logged apart

    @property
    def logs(self) -> tuple[Path, Path]:
        """The prediction-log folders of the new and the old version's rows."""
        places = Workdir(self.workdir)
        served = places.prediction_log(self.spec.name)
        return (places.shadow_log(self.spec.name) if self.paired else served), served


def tally(access: AccessLog, tallies: dict[int, Tally]) -> None:
    """Count the answers nginx logged since the last read, per back-end port of the step."""
    for port, status, ms in access.read():
        if port in tallies:
            tallies[port].add(status, ms)


def step_figures(step: Step, started: float, tallies: dict[int, Tally], final: bool) -> StepReport:
    """The step's figures so far and the guardrails they break."""
    new, old = step.new, step.old
    rails, policy, task = step.plan.guardrails, step.spec.monitoring, task_of(step.spec)
    metric = live_metric_name(task, policy)
    new_rows = scored_since(step.logs[0], step.spec, new.model_version, started)
    old_rows = scored_since(step.logs[1], step.spec, old.model_version, started) if old is not None else None
    live = {}
    if rails.max_live_metric_drop is not None and old is not None and not step.paired:
        end = time.time() + 1
        for backend in (new, old):
            window = ServedWindow(model_version=backend.model_version, start=_utc(started), end=_utc(end))
            rows = labelled_window(Workdir(step.workdir), step.spec, window)
            value, labelled = live_metric(rows, step.spec, metric)
            live[backend.port] = (value if labelled >= policy.min_labelled_rows else None, labelled)
    challenger = VersionFigures.of(new.model_version, tallies[new.port], new_rows.height, *live.get(new.port, ()))
    champion, shift, agreement = None, None, None
    if old is not None:
        champion = VersionFigures.of(old.model_version, tallies[old.port], old_rows.height, *live.get(old.port, ()))
        new_s, old_s = (rows.get_column(task.score_column).to_numpy() for rows in (new_rows, old_rows))
        shift = shift_between(new_s, old_s, rails.min_requests)
        if step.paired:
            agreement = task.agreement(*_paired(new_rows, old_rows))
    answered = challenger.requests + (champion.requests if champion else 0)
    served = 100 * challenger.requests / answered if step.share and champion and answered else None
    return StepReport(
        name=step.name,
        started_at=started,
        seconds=round(time.time() - started, 1),
        share=step.share,
        served_share=None if served is None else round(served, 1),
        challenger=challenger,
        champion=champion,
        prediction_shift=shift,
        agreement=agreement,
        breaches=judge(
            challenger, champion, shift, rails, final, policy.min_labelled_rows, partial(task.shortfall, metric)
        ),  # fmt: skip
    )


def keep_step(reports: list[StepReport], report: StepReport, what: str | None = None) -> None:
    """Add the step's report; a breached step (its report kept for the record) fails the roll-out,
    naming the step (or `what`) and its breaches."""
    reports.append(report)
    if not report.passed:
        raise RolloutFailed(f"{what or report.name}: {'; '.join(report.breaches)}")


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def bake(step: Step, seconds: float, access: AccessLog, fail_closed: bool = True) -> StepReport:
    """Hold the step `seconds`, checking the guardrails every `check_seconds`; return at the
    first breach or at the end. Without `fail_closed` a figure never computed is no breach."""
    started = time.time()
    tallies = {b.port: Tally() for b in (step.new, step.old) if b is not None}
    while True:
        tally(access, tallies)
        final = time.time() - started >= seconds
        report = step_figures(step, started, tallies, final and fail_closed)
        if report.breaches or final:
            get_run_logger().info("%s: %s", step.name, report.breaches or "guardrails held")
            access.path.unlink(missing_ok=True)
            return report
        time.sleep(min(step.plan.check_seconds, max(0.1, seconds - (time.time() - started))))


# -- Prefect tasks -------------------------------------------------------------------------------


@task(name="start-backend", **UNCACHED)
def start_backend_task(
    kind: Kind,
    artifact: str,
    model_version: str,
    env: dict[str, str],
    log_dir: Path,
    resources=None,
    api_key: SecretStr | None = None,
) -> Backend:
    limits = container_limits(resources.cpus, resources.memory) if resources is not None else {}
    backend = start_backend(kind, artifact, model_version, env, log_dir, limits, api_key)
    get_run_logger().info("started %s backend %s on :%d (v%s)", kind, backend.ident[:12], backend.port, model_version)
    return backend


@task(name="wait-ready", **UNCACHED | {"retries": 0})
def wait_ready_task(backend: Backend, timeout: float) -> None:
    wait_ready(backend, timeout)


@task(name="smoke-test", **UNCACHED | {"retries": 0})
def smoke_test_task(
    backend: Backend, spec: DatasetSpec, records: list[dict], expected: list[float], api_key: SecretStr | None = None
) -> None:
    smoke_test(backend, records, np.asarray(expected), task_of(spec).score_column, api_key)


@task(name="switch-endpoint", **UNCACHED | {"retries": 0})
def switch_task(
    workdir: Path,
    dataset: str,
    port: int,
    backend: Backend,
    api_key: SecretStr | None = None,
    access_log: Path | None = None,
) -> ServingState:
    """Point the stable endpoint at `backend` (with `access_log`: its answers recorded for the
    watch); with `api_key` nginx answers 401 without it."""
    folder = state_dir(workdir, dataset, port)
    point_proxy(folder, port, Route(live=backend.port, access_log=access_log), lock_for(api_key))
    wait_proxy_serves(port, backend.model_version, api_key=api_key)
    state = ServingState(port=port, live=backend)
    write_state(workdir, dataset, state)
    return state


@task(name="canary-step", task_run_name="canary-{share}pct", **UNCACHED | {"retries": 0})
def canary_step_task(
    workdir: Path, spec: DatasetSpec, port: int, new: Backend, old: Backend, share: float, plan: RolloutPlan,
    api_key: SecretStr | None = None,
) -> StepReport:  # fmt: skip
    """`share` percent of requests to the new version for the bake time, the rest to the old."""
    access = step_log(workdir, spec.name, port, f"canary-{share:g}")
    route = Route(live=old.port, canary=new.port, percent=share, sticky_header=plan.sticky_header,
                  access_log=access.path)  # fmt: skip
    point_proxy(state_dir(workdir, spec.name, port), port, route, lock_for(api_key))
    step = Step(f"canary {share:g}%", new, old, plan, spec, workdir, share=share)
    return bake(step, plan.bake_seconds, access)


@task(name="shadow", **UNCACHED | {"retries": 0})
def shadow_task(
    workdir: Path, spec: DatasetSpec, port: int, shadow: Backend, live: Backend, plan: RolloutPlan,
    api_key: SecretStr | None = None,
) -> StepReport:  # fmt: skip
    """Live scoring requests also go to `shadow` (its answers dropped by nginx) for the bake time;
    both answers are logged and compared request by request."""
    access = step_log(workdir, spec.name, port, "shadow")
    route = Route(live=live.port, shadow=shadow.port, access_log=access.path)
    folder = state_dir(workdir, spec.name, port)
    point_proxy(folder, port, route, lock_for(api_key))
    try:
        return bake(Step("shadow", shadow, live, plan, spec, workdir, paired=True), plan.bake_seconds, access)
    finally:  # the mirror goes whatever the verdict
        point_proxy(folder, port, Route(live=live.port), lock_for(api_key))


@task(name="watch", **UNCACHED | {"retries": 0})
def watch_task(
    workdir: Path, spec: DatasetSpec, port: int, new: Backend, plan: RolloutPlan, access_log: Path
) -> StepReport:
    """After the switch: the new version's answers against the guardrails for the watch window
    (the old version still running). A breach rolls back; too little traffic to judge does not."""
    step = Step("watch", new, None, plan, spec, workdir)
    return bake(step, plan.watch_seconds, AccessLog(access_log), fail_closed=False)


@task(name="staging", **UNCACHED | {"retries": 0})
def staging_task(
    workdir: Path, spec: DatasetSpec, staging: StagingSpec, new: Backend, records: list[dict], plan: RolloutPlan,
    api_key: SecretStr | None = None,
) -> StepReport:  # fmt: skip
    """Serve the new version on the staging endpoint, replay test rows through it and judge what
    it answered (errors, p95, enough answers)."""
    access = step_log(workdir, spec.name, staging.port, "staging")
    folder = state_dir(workdir, spec.name, staging.port)
    point_proxy(folder, staging.port, Route(live=new.port, access_log=access.path), lock_for(api_key))
    wait_proxy_serves(staging.port, new.model_version, api_key=api_key)
    started = time.time()
    with httpx.Client(base_url=f"http://127.0.0.1:{staging.port}", headers=key_headers(api_key), timeout=30) as c:
        for i in range(max(staging.requests, plan.guardrails.min_requests)):  # enough to judge
            c.post("/predict", json={"records": [records[i % len(records)]]})
    time.sleep(1.5)  # nginx flushes its log each second
    tallies = {new.port: Tally()}
    tally(access, tallies)
    access.path.unlink(missing_ok=True)
    report = step_figures(Step("staging", new, None, plan, spec, workdir), started, tallies, final=True)
    get_run_logger().info("staging on :%d: %s", staging.port, report.breaches or "guardrails held")
    return report


def wait_for_approval(staging: StagingSpec, model_version: str) -> tuple[bool, str]:
    """Pause the flow run until someone answers the approval form (Prefect UI, or
    `resume_flow_run(id, run_input={"approve": …})`); no answer within the timeout is a no."""
    timeout = int(staging.approval_timeout_seconds)
    form = Approval.with_initial_data(
        description=f"v{model_version} serves on staging http://127.0.0.1:{staging.port}: serve it in production?",
        approve=False,
    )
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=max(1, min(10, timeout // 10)))
    except FlowPauseTimeout:
        return False, f"no approval within {timeout}s"
    return answer.approve, f"{'approved' if answer.approve else 'rejected'}: {answer.note}".rstrip(": ")


@task(name="revert-endpoint", **UNCACHED | {"retries": 0})
def revert_task(workdir: Path, dataset: str, port: int, old: Backend, api_key: SecretStr | None = None) -> float:
    """Traffic back to the old version; the seconds it took until the endpoint served it."""
    started = time.monotonic()
    point_proxy(state_dir(workdir, dataset, port), port, Route(live=old.port), lock_for(api_key))
    wait_proxy_serves(port, old.model_version, api_key=api_key)
    write_state(workdir, dataset, ServingState(port=port, live=old))
    return round(time.monotonic() - started, 3)


@task(name="record-rollout", **UNCACHED)
def record_rollout_task(
    cfg: TrackingConfig, dataset: str, model_version: str, plan: RolloutPlan, reports: list[StepReport],
    outcome: str, reason: str,
) -> None:  # fmt: skip
    """The decision and every step's figures: a Prefect artifact and tags on the model version."""
    rows = [_report_row(r) for r in reports]
    set_version_tags(cfg, model_version, {
        f"{TAG_PREFIX}rollout.strategy": plan.strategy,
        f"{TAG_PREFIX}rollout.outcome": outcome,
        f"{TAG_PREFIX}rollout.reason": reason[:1000],
        f"{TAG_PREFIX}rollout.steps": json.dumps(rows, default=str)[:4900],
    })  # fmt: skip
    header = "| step | s | target % | served % | answers | errors | p95 ms | shift | agreement | verdict |\n"
    table = (
        header
        + "|---" * 10
        + "|\n"
        + "".join(
            f"| {r['step']} | {r['seconds']} | {r['share'] or ''} | {r['served_share'] or ''} | {r['answers']} "
            f"| {r['errors']} | {r['p95_ms'] or ''} | {r['shift'] or ''} | {r['agreement'] or ''} | {r['verdict']} |\n"
            for r in rows
        )
    )
    create_markdown_artifact(
        key=f"{artifact_key(dataset)}-rollout",
        description=f"v{model_version}: {outcome}",
        markdown=f"### Roll-out of v{model_version} ({plan.strategy}): {outcome}\n\n{reason}\n\n{table}",
    )


def _report_row(r: StepReport) -> dict:
    def rounded(x, n=3):
        return None if x is None else round(x, n)

    return {
        "step": r.name, "seconds": r.seconds, "share": r.share, "served_share": r.served_share,
        "answers": r.challenger.requests, "errors": r.challenger.errors, "p95_ms": rounded(r.challenger.p95_ms, 1),
        "shift": rounded(r.prediction_shift), "agreement": rounded(r.agreement),
        "verdict": "; ".join(r.breaches) or "held",
    }  # fmt: skip


@task(name="retire-backend", **UNCACHED)
def retire_task(backend: Backend | None, endpoint: Path | None = None) -> None:
    """Stop `backend` once the endpoint's proxy (its folder) no longer holds a request to it."""
    if backend is None:
        return
    if endpoint is not None and not wait_drained(endpoint):
        get_run_logger().warning("the proxy's old workers still run after 30 s; stopping %s anyway", backend.url)
    stop_backend(backend)


@task(name="smoke-rows", **UNCACHED)
def smoke_rows_task(cfg, model_version: str, n: int) -> tuple[list[dict], list[float]]:
    """Rows of the model's own test split and the model's offline scores for them (its task's score
    column: probabilities, predicted values)."""

    model = load_model(cfg, f"models:/{cfg.model_name}/{model_version}")
    rows = read_split(version_manifest(cfg, model_version), "test").select(model.spec.base_features).head(n)
    return rows.to_dicts(), model.predict_scores(rows).tolist()


@task(name="abort-rollout", **UNCACHED)
def abort_task(
    cfg, workdir: Path, dataset: str, port: int, backend: Backend | None, live: Backend | None, model_version: str,
    reason: str, api_key: SecretStr | None = None, staging_port: int | None = None,
) -> str:  # fmt: skip
    """Traffic back to the old version (if it had moved), the new back-end removed, `champion`
    back on the old version if it had moved: the registry names what serves."""

    logger = get_run_logger()
    note = f"roll-out of v{model_version} failed: {reason}"
    if live is not None and (backend is None or live.ident != backend.ident):
        seconds = revert_task.fn(workdir, dataset, port, live, api_key)
        note += f"; traffic back on v{live.model_version} in {seconds:.2f}s"
    if staging_port is not None:
        stop_proxy(state_dir(workdir, dataset, staging_port))
    if backend is not None and (live is None or live.ident != backend.ident):
        wait_drained(state_dir(workdir, dataset, port))  # no request of the old workers' still on it
        stop_backend(backend)
    champion, previous = version_by_alias(cfg, CHAMPION), version_by_alias(cfg, PREVIOUS)
    if champion is not None and champion.version == model_version and previous is not None:
        rollback(cfg)
        note += f"; champion alias back on v{previous.version}"
    logger.error(note)
    emit_model_event(ROLLOUT_ROLLED_BACK, dataset, {"model_version": model_version, "reason": note[:2000]})
    return note
