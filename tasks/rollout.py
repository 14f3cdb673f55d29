"""Roll-out tasks: start the new back-end, check it (readiness, smoke rows scored as the
registry's model scores them), switch the stable endpoint to it, retire the old one — or
abort, roll the registry back and say so (the `model.rollout.rolled_back` event)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from pydantic import SecretStr

from tasks.common import UNCACHED
from tasks.events import ROLLOUT_ROLLED_BACK, emit_model_event
from tasks.stores.backends import (
    Backend,
    Kind,
    ServingState,
    container_limits,
    smoke_test,
    start_backend,
    state_dir,
    stop_backend,
    wait_ready,
    write_state,
)
from tasks.stores.proxy import Lock, point_proxy, wait_proxy_serves
from tasks.stores.registry import CHAMPION, PREVIOUS, load_model, rollback, version_by_alias, version_manifest
from tasks.stores.snapshots import read_split

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
    backend: Backend, records: list[dict], expected: list[float], api_key: SecretStr | None = None
) -> None:
    smoke_test(backend, records, np.asarray(expected), api_key)


@task(name="switch-endpoint", **UNCACHED | {"retries": 0})
def switch_task(
    workdir: Path, dataset: str, port: int, backend: Backend, api_key: SecretStr | None = None
) -> ServingState:
    """Point the stable endpoint at `backend`; with `api_key` nginx answers 401 without it."""
    folder = state_dir(workdir, dataset, port)
    point_proxy(folder, port, backend.port, Lock.bearer(api_key) if api_key is not None else None)
    wait_proxy_serves(port, backend.model_version, api_key=api_key)
    state = ServingState(port=port, live=backend)
    write_state(workdir, dataset, state)
    return state


@task(name="retire-backend", **UNCACHED)
def retire_task(backend: Backend | None) -> None:
    if backend is not None:
        stop_backend(backend)


@task(name="smoke-rows", **UNCACHED)
def smoke_rows_task(cfg, model_version: str, n: int) -> tuple[list[dict], list[float]]:
    """Rows of the model's own test split and the model's offline probabilities for them."""

    model = load_model(cfg, f"models:/{cfg.model_name}/{model_version}")
    rows = read_split(version_manifest(cfg, model_version), "test").select(model.spec.base_features).head(n)
    return rows.to_dicts(), model.predict_proba(rows).tolist()


@task(name="abort-rollout", **UNCACHED)
def abort_task(cfg, dataset: str, backend: Backend | None, model_version: str, reason: str) -> str:
    """Remove the new backend, keep the old one serving, and put `champion` back if it had moved."""

    logger = get_run_logger()
    if backend is not None:
        stop_backend(backend)
    champion, previous = version_by_alias(cfg, CHAMPION), version_by_alias(cfg, PREVIOUS)
    note = f"roll-out of v{model_version} failed: {reason}"
    if champion is not None and champion.version == model_version and previous is not None:
        rollback(cfg)
        note += f"; champion alias back on v{previous.version}"
    logger.error(note)
    emit_model_event(ROLLOUT_ROLLED_BACK, dataset, {"model_version": model_version, "reason": note[:2000]})
    return note
