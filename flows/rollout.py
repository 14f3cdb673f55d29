"""Phase 6: blue/green roll-out of a packaged model behind the stable endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.cli import run
from flows.naming import named_after_config
from flows.package import package
from tasks.common import artifact_key
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import RolloutResult
from tasks.rollout import (
    abort_task,
    retire_task,
    smoke_rows_task,
    smoke_test_task,
    start_backend_task,
    switch_task,
    wait_ready_task,
)
from tasks.settings import serving_api_key, serving_target_task
from tasks.stores.backends import RolloutFailed, read_state
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
) -> RolloutResult:
    """Start the new version beside the live one, prove it, switch the stable endpoint, retire the old.

    Any failure removes the new backend, keeps the old one serving and moves `champion` back.

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
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    serving = serving_target_task(spec, target, port)
    target, port = serving.kind, serving.port
    api_key = serving_api_key(spec)  # the block's Secret, never a task result, log or artifact
    packaged = package(config=config, workdir=workdir, tracking_uri=tracking_uri, alias=alias, target=target)
    current = read_state(workdir, spec.name, port)
    records, expected = smoke_rows_task(tracking, packaged.model_version, smoke_rows)
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(Workdir(workdir).predictions)} | (backend_env or {})
    artifact = packaged.image if target == "docker" else packaged.bento_tag
    new = None
    try:
        new = start_backend_task(
            target, artifact, packaged.model_version, env, Workdir(workdir).serving(spec.name), serving, api_key
        )
        wait_ready_task(new, ready_timeout)  # /readyz: open even when locked
        smoke_test_task(new, records, expected, api_key)
        state = switch_task(workdir, spec.name, port, new, api_key)
    except Exception as exc:
        note = abort_task(tracking, spec.name, new, packaged.model_version, str(exc))
        raise RolloutFailed(note) from exc
    retire_task(current.live if current.live and current.live.ident != new.ident else None)
    previous = current.live.model_version if current.live else None
    create_markdown_artifact(
        key=f"{artifact_key(spec.name)}-rollout",
        description=f"v{packaged.model_version} live on :{port}",
        markdown=f"### Roll-out: v{packaged.model_version} live on http://127.0.0.1:{port}\n\n"
        f"- backend: {target} `{artifact}` on :{new.port}\n- previous: v{previous}\n",
    )
    return RolloutResult(
        dataset=spec.name,
        endpoint=f"http://127.0.0.1:{port}",
        model_version=packaged.model_version,
        previous_version=previous,
        backend=state.live,
        switched=True,
    )


if __name__ == "__main__":
    run(rollout)
