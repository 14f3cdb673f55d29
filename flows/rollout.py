"""Phase 6: the roll-out of a packaged model behind the stable endpoint — staging and approval
if configured, then one switch (blue/green), canary steps, or a shadow phase first; a watch
window after the switch. Any failure or guardrail breach sends traffic back to the old version."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from blocks import RolloutSettings
from flows.cli import run
from flows.naming import named_after_config
from flows.package import package
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import RolloutResult
from tasks.rollout import (
    abort_task,
    canary_step_task,
    keep_step,
    record_rollout_task,
    retire_task,
    shadow_task,
    smoke_rows_task,
    smoke_test_task,
    staging_task,
    start_backend_task,
    step_log,
    switch_task,
    wait_for_approval,
    wait_ready_task,
    watch_task,
)
from tasks.settings import rollout_plan_task, serving_api_key, serving_target_task
from tasks.stores.backends import RolloutFailed, read_state, state_dir
from tasks.stores.workdir import Workdir


@flow(name="rollout", flow_run_name=named_after_config("rollout"))
def rollout(
    config: Path,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    alias: str = "champion",
    target: Literal["docker", "process"] | None = None,
    port: int | None = None,
    ready_timeout: float = 120,
    smoke_rows: int = 20,
    backend_env: dict[str, str] | None = None,
    plan: RolloutSettings | None = None,
    bento: str | None = None,
) -> RolloutResult:
    """Start the new version beside the live one, prove it, move traffic to it, watch it, retire the old.

    Any failure or breached guardrail sends traffic back to the old version, removes the new
    backend and moves `champion` back.

    Args:
        config: dataset config (YAML)
        workdir: folder of the default MLflow database and the serving state
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        alias: registry alias to roll out
        target: docker (a container of the bento's image) or process (`bentoml serve`, no engine);
            default: the dataset's `Lifecycle Serving Target` block, else docker
        port: the stable endpoint's port on 127.0.0.1 (default: the block's, else 3000)
        ready_timeout: seconds the new backend has to become ready
        smoke_rows: test rows whose predictions must match the model's offline ones
        backend_env: extra environment for the new backend
        plan: strategy, steps, bake/watch seconds, guardrails, staging over the block's and the config's
        bento: a process roll-out of this bento (a rebuilt service around the alias's model) instead of the packaged one
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    serving = serving_target_task(spec, target, port)
    target, port = serving.kind, serving.port
    steps = rollout_plan_task(spec, plan)
    api_key = serving_api_key(spec)  # the block's Secret, never a task result, log or artifact
    packaged = package(config=config, workdir=workdir, tracking_uri=tracking_uri, alias=alias, target=target)
    version, live = packaged.model_version, read_state(workdir, spec.name, port).live
    records, expected = smoke_rows_task(tracking, version, smoke_rows)
    artifact = bento or (packaged.image if target == "docker" else packaged.bento_tag)
    places = Workdir(workdir)
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(places.predictions)} | (backend_env or {})
    logs, endpoint = places.serving(spec.name), state_dir(workdir, spec.name, port)
    strategy = steps.strategy if live is not None else "blue_green"  # nothing to compare with yet
    new, reports, staging_port, approval = None, [], steps.staging.port if steps.staging else None, ""

    def proven(backend):
        wait_ready_task(backend, ready_timeout)  # /readyz: open even when locked
        smoke_test_task(backend, spec, records, expected, api_key)

    try:
        if strategy == "shadow":
            shadow_env = env | {"LIFECYCLE_PREDICTION_LOG_DIR": str(places.shadow_log(spec.name).parent)}
            new = start_backend_task(target, artifact, version, shadow_env, logs, serving, api_key)
            proven(new)
            keep_step(reports, shadow_task(workdir, spec, port, new, live, steps, api_key))
            retire_task(new, endpoint)  # its log was the shadow's: the serving one starts fresh
        new = start_backend_task(target, artifact, version, env, logs, serving, api_key)
        proven(new)
        if steps.staging is not None:
            keep_step(reports, staging_task(workdir, spec, steps.staging, new, records, steps, api_key))
            if steps.staging.approval:
                approved, approval = wait_for_approval(steps.staging, version)
                if not approved:
                    raise RolloutFailed(f"production not approved ({approval})")
        if strategy == "canary":
            for share in steps.steps[:-1]:
                keep_step(reports, canary_step_task(workdir, spec, port, new, live, share, steps, api_key))
        watched = step_log(workdir, spec.name, port, "watch").path if live and steps.watch_seconds else None
        state = switch_task(workdir, spec.name, port, new, api_key, watched)
        if watched is not None:
            keep_step(reports, watch_task(workdir, spec, port, new, steps, watched), "watch after the switch")
            switch_task(workdir, spec.name, port, new, api_key)  # the watch's log off
    except Exception as exc:
        note = abort_task(tracking, workdir, spec.name, port, new, live, version, str(exc), api_key, staging_port)
        record_rollout_task(tracking, spec.name, version, steps, reports, "rolled back", note)
        raise RolloutFailed(note) from exc
    retire_task(live if live and live.ident != new.ident else None, endpoint)
    decision = f"v{version} live on :{port}" + (f" (staging {approval})" if approval else "")
    record_rollout_task(tracking, spec.name, version, steps, reports, "live", decision)
    return RolloutResult(
        dataset=spec.name,
        endpoint=f"http://127.0.0.1:{port}",
        model_version=version,
        previous_version=live.model_version if live else None,
        backend=state.live,
        switched=True,
        strategy=strategy,
        steps=reports,
    )


if __name__ == "__main__":
    run(rollout)
