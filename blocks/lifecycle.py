"""The lifecycle's block types. Every field left empty means "use the dataset config"."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect_docker.credentials import DockerRegistryCredentials
from pydantic import BaseModel, ConfigDict, Field, create_model

from tasks.core.spec import DriftPolicy, RolloutPlan


def block_name(dataset: str) -> str:
    """Block document names allow lowercase letters, digits and dashes: `my_table` → `my-table`."""
    return re.sub(r"[^a-z0-9-]+", "-", dataset.lower()).strip("-")


class TrackingSettings(Block):
    """Where runs and models go: the MLflow tracking and registry URIs, experiment and model name."""

    _block_type_name = "Lifecycle Tracking"
    _block_type_slug = "lifecycle-tracking"
    _description = "MLflow tracking/registry URIs, experiment and registered model name for one dataset."

    tracking_uri: str | None = Field(default=None, description="e.g. http://mlflow:5000 (empty: sqlite in the workdir)")
    registry_uri: str | None = Field(default=None, description="empty: the tracking URI")
    experiment: str | None = Field(default=None, description="empty: the dataset name")
    model_name: str | None = Field(default=None, description="empty: the config's model_name or dataset name")
    username: str | None = Field(default=None, description="MLflow basic-auth user (MLFLOW_TRACKING_USERNAME)")
    password: Secret | None = Field(default=None, description="a Secret block with the MLflow password")


def _optional_fields(model: type[BaseModel]) -> dict:
    """Every field of `model` with its type, bounds and description, empty by default."""
    fields = {}
    for name, info in model.model_fields.items():
        kind = info.annotation | None
        fields[name] = (
            Annotated[kind, *info.metadata] if info.metadata else kind,
            Field(None, description=info.description),
        )
    return fields


# The config's `rollout:` fields (RolloutPlan), declared there once: the Serving Target block's
# `rollout` and the roll-out flow's `plan` parameter; empty fields keep the config's value.
RolloutSettings = create_model(
    "RolloutSettings",
    __config__=ConfigDict(extra="forbid"),
    __module__=__name__,
    __doc__="How a new version reaches production. Empty fields keep the config's `rollout` values.",
    **_optional_fields(RolloutPlan),
)


class ServingTarget(Block):
    """Where the champion serves: a local process or a container behind the stable endpoint."""

    _block_type_name = "Lifecycle Serving Target"
    _block_type_slug = "lifecycle-serving-target"
    _description = "Roll-out target: process or docker, image repository, stable port, resources."

    kind: Literal["process", "docker"] | None = Field(default=None, description="empty: docker")
    port: int | None = Field(default=None, ge=1, le=65535, description="stable endpoint port on 127.0.0.1")
    image_repository: str | None = Field(default=None, description="push the image here (e.g. registry/org/name)")
    registry_credentials: DockerRegistryCredentials | None = Field(default=None, description="for the push step")
    cpus: float | None = Field(default=None, gt=0, description="container CPU limit")
    memory: str | None = Field(default=None, description="container memory limit, e.g. 2g")
    api_key: Secret | None = Field(
        default=None,
        description="a Secret block: the service and the stable endpoint then answer 401 without "
        "`Authorization: Bearer <key>` or `x-api-key: <key>` (16+ characters of A-Z a-z 0-9 . _ ~ + / = -)",
    )
    rollout: RolloutSettings | None = Field(
        default=None, description="strategy, canary steps, bake and watch times, guardrails, staging (empty: config's)"
    )


# The config's `monitoring:` fields (DriftPolicy), declared there once; empty keeps the config's value.
DriftPolicySettings = create_model(
    "DriftPolicySettings",
    __base__=Block,
    __module__=__name__,
    __doc__="When a batch counts as drift. Empty fields keep the config's `monitoring` values.",
    **_optional_fields(DriftPolicy),
)
DriftPolicySettings._block_type_name = "Lifecycle Drift Policy"
DriftPolicySettings._block_type_slug = "lifecycle-drift-policy"
DriftPolicySettings._description = (
    "Minimum rows, share of drifted columns, method/threshold and performance drop for drift."
)
