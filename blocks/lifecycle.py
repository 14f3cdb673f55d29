"""The lifecycle's block types. Every field left empty means "use the dataset config"."""

from __future__ import annotations

import re
from typing import Literal

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect_docker.credentials import DockerRegistryCredentials
from pydantic import Field


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


class DriftPolicySettings(Block):
    """When a batch counts as drift. Empty fields keep the config's `monitoring` values."""

    _block_type_name = "Lifecycle Drift Policy"
    _block_type_slug = "lifecycle-drift-policy"
    _description = "Minimum rows, share of drifted columns, method/threshold and performance drop for drift."

    min_rows: int | None = Field(default=None, ge=1)
    drift_share: float | None = Field(default=None, gt=0, le=1)
    method: str | None = Field(default=None, description="Evidently drift method, e.g. psi, wasserstein, jensenshannon")
    threshold: float | None = Field(default=None)
    performance_metric: Literal["roc_auc", "pr_auc", "f1", "accuracy"] | None = None
    max_performance_drop: float | None = Field(default=None, ge=0)
    schedule_hint: str | None = Field(default=None, description="cron the monitor deployment should run on")
