"""Per-environment settings from Prefect blocks (edited in the UI or CLI), over the dataset
config's defaults. A block document is looked up by the dataset's name; when none is saved
(or no server knows the block type) the config decides, so the embedded default needs none.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from prefect import get_run_logger, task
from pydantic import BaseModel, SecretStr

from blocks import DriftPolicySettings, RolloutSettings, ServingTarget, TrackingSettings, block_name
from tasks.common import UNCACHED
from tasks.core.errors import SettingsError
from tasks.core.spec import DatasetSpec, DriftPolicy, RolloutPlan
from tasks.stores.proxy import Lock

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


class ServingChoice(BaseModel):
    """Where and how the champion serves (no credentials: those stay in the block)."""

    kind: Literal["process", "docker"]
    port: int
    image_repository: str | None = None
    cpus: float | None = None
    memory: str | None = None
    push: bool = False


def serving_choice(kind: str | None, port: int | None, block: ServingTarget | None) -> ServingChoice:
    """The flow's parameters, else the block's fields, else docker on 3000."""
    saved = overrides(block)
    return ServingChoice(
        kind=kind or saved.get("kind") or DEFAULT_TARGET,
        port=port or saved.get("port") or DEFAULT_PORT,
        image_repository=saved.get("image_repository"),
        cpus=saved.get("cpus"),
        memory=saved.get("memory"),
        push=bool(saved.get("image_repository") and block.registry_credentials is not None),
    )


def merged_plan(config: RolloutPlan, *layers: BaseModel | None) -> RolloutPlan:
    """The config's roll-out plan with each layer's set fields over it (block, then parameter);
    the result is validated again (steps still rising to 100)."""
    fields = config.model_dump()
    for layer in layers:
        if layer is not None:
            fields = _deep_merge(fields, layer.model_dump(exclude_unset=True, exclude_none=True))
    return RolloutPlan.model_validate(fields)


def _deep_merge(base: dict, over: dict) -> dict:
    """`over`'s keys on `base`; a nested section (guardrails, staging) merges field by field."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def serving_api_key(spec: DatasetSpec) -> SecretStr | None:
    """The serving target block's API key, kept a `SecretStr` (masked in every log and dump) and
    out of task results: the roll-out flow reads it and hands it to the tasks that need it."""
    block = saved_block(ServingTarget, spec.name)
    if block is None or block.api_key is None:
        return None
    key = SecretStr(str(block.api_key.get()))
    Lock.bearer(key)  # a key nginx cannot hold fails here, before anything starts
    return key


def apply_tracking_credentials(block: TrackingSettings | None) -> None:
    """MLflow reads basic-auth credentials from the environment; they never reach a log or a file."""
    if block is None:
        return
    if block.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = block.username
    if block.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = block.password.get()


def root_cause(exc: BaseException) -> str:
    """The Docker engine's own words, found in an exception chain."""
    from docker.errors import APIError

    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    engine = [e for e in chain if isinstance(e, APIError)]
    return str(engine[0] if engine else chain[-1])


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
def serving_target_task(spec: DatasetSpec, kind: str | None = None, port: int | None = None) -> ServingChoice:
    return serving_choice(kind, port, saved_block(ServingTarget, spec.name))


@task(name="rollout-plan", **UNCACHED)
def rollout_plan_task(spec: DatasetSpec, override: RolloutSettings | None = None) -> RolloutPlan:
    """The flow's `plan` parameter over the Serving Target block's `rollout` over the config."""
    block = saved_block(ServingTarget, spec.name)
    plan = merged_plan(spec.rollout, block.rollout if block is not None else None, override)
    get_run_logger().info("roll-out plan: %s", plan.model_dump(exclude_none=True))
    return plan


@task(name="push-image", **UNCACHED)
def push_image_task(spec: DatasetSpec, image: str) -> str:
    """Push the image with the block's `DockerRegistryCredentials` (prefect-docker's push step)."""
    from prefect_docker.deployments.steps import push_docker_image

    block = saved_block(ServingTarget, spec.name)
    credentials = block.registry_credentials
    name, tag = image.rsplit(":", 1)
    try:
        push_docker_image(
            image_name=name,
            tag=tag,
            credentials={
                "username": credentials.username,
                "password": credentials.password.get_secret_value(),
                "registry_url": credentials.registry_url,
            },
        )
    except Exception as exc:  # prefect-docker words every failure as "Docker is not running"
        cause = root_cause(exc)
        error = SettingsError if re.search(r"(?i)401|unauthorized|denied", cause) else RuntimeError
        raise error(f"pushing {image} to {credentials.registry_url} failed: {cause}") from exc
    get_run_logger().info("pushed %s to %s", image, credentials.registry_url)
    return image
