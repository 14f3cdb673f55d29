"""Packaging tasks: the champion from the MLflow registry → the BentoML model store → a bento
(→ an image); the BentoML side is `tasks/stores/bentos.py`."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.common import UNCACHED, artifact_key
from tasks.core.spec import DatasetSpec
from tasks.stores.bentos import base_image, bento_name, build_bento, containerize, import_model
from tasks.stores.registry import TrackingConfig, VersionInfo, version_by_alias


# -- Prefect tasks -----------------------------------------------------------------------------
@task(name="resolve-alias", **UNCACHED)
def resolve_alias_task(cfg: TrackingConfig, alias: str) -> VersionInfo:
    mv = version_by_alias(cfg, alias)
    if mv is None:
        raise LookupError(f"{cfg.model_name} has no version with alias {alias!r}: run train/register first")
    return mv


@task(name="import-model", **UNCACHED)
def import_model_task(cfg: TrackingConfig, spec: DatasetSpec, mv: VersionInfo) -> tuple[str, bool]:
    return import_model(cfg, spec, mv)


@task(name="base-image", **UNCACHED)
def base_image_task() -> str:
    return base_image()


@task(name="containerize", **UNCACHED)
def containerize_task(bento_tag: str, repository: str | None = None) -> tuple[str, bool]:
    image, built = containerize(bento_tag, repository)
    get_run_logger().info("%s image %s", "built" if built else "found", image)
    return image, built


@task(name="build-bento", **UNCACHED)
def build_bento_task(spec: DatasetSpec, model_tag: str, workdir: Path, base_image: str = "") -> tuple[str, bool]:
    tag, built = build_bento(spec, model_tag, workdir, base_image)
    get_run_logger().info("%s bento %s", "built" if built else "found", tag)
    create_markdown_artifact(
        key=f"{artifact_key(bento_name(spec))}-bento",
        markdown=f"### Bento `{tag}`\n\nModel `{model_tag}`. Serve it: `bentoml serve {tag}`\n",
        description=f"Bento {tag} of model {model_tag}",
    )
    return tag, built
