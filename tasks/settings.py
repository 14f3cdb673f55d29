"""Per-environment settings from Prefect blocks (edited in the UI or CLI), over the dataset
config's defaults. A block document is looked up by the dataset's name; when none is saved
(or no server knows the block type) the config decides, so the embedded default needs none.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import get_run_logger, task

from blocks import DriftPolicySettings, ServingTarget, TrackingSettings, block_name
from tasks.common import UNCACHED
from tasks.spec import DatasetSpec, DriftPolicy

DEFAULT_TARGET, DEFAULT_PORT = "docker", 3000


def saved_block(cls, dataset: str):
    """The block document named after the dataset, or None."""
    try:
        return cls.load(block_name(dataset))
    except ValueError:  # no such document, or the type was never registered
        return None


def overrides(block) -> dict[str, Any]:
    """The fields a block sets (empty ones fall back)."""
    if block is None:
        return {}
    return {k: v for k, v in block.model_dump(exclude={"block_type_slug"}).items() if v is not None}


def merged_policy(config: DriftPolicy, block: DriftPolicySettings | None) -> DriftPolicy:
    fields = {k: v for k, v in overrides(block).items() if k in DriftPolicy.model_fields}
    return config.model_copy(update=fields) if fields else config


def serving_choice(kind: str | None, port: int | None, block: ServingTarget | None) -> tuple[str, int]:
    """(kind, stable port): the flow's parameter, else the block, else docker on 3000."""
    saved = overrides(block)
    return kind or saved.get("kind") or DEFAULT_TARGET, port or saved.get("port") or DEFAULT_PORT


def apply_tracking_credentials(block: TrackingSettings | None) -> None:
    """MLflow reads basic-auth credentials from the environment; they never reach a log or a file."""
    if block is None:
        return
    if block.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = block.username
    if block.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = block.password.get()


# -- Prefect tasks ---------------------------------------------------------------------------
@task(name="drift-policy", **UNCACHED)
def drift_policy_task(spec: DatasetSpec, override: DriftPolicy | None = None) -> DriftPolicy:
    """The flow's `policy` parameter, else the saved block over the config, else the config."""
    if override is not None:
        return override
    block = saved_block(DriftPolicySettings, spec.name)
    policy = merged_policy(spec.monitoring, block)
    if block is not None:
        get_run_logger().info("drift policy from block %s: %s", block_name(spec.name), policy.model_dump())
    return policy


@task(name="serving-target", **UNCACHED)
def serving_target_task(spec: DatasetSpec, kind: str | None, port: int | None) -> tuple[str, int]:
    return serving_choice(kind, port, saved_block(ServingTarget, spec.name))
