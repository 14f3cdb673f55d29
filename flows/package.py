"""Phase 5: the registry's champion → the BentoML model store → a bento."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from flows.cli import run
from flows.naming import named_after_config
from tasks.package import base_image_task, build_bento_task, containerize_task, import_model_task, resolve_alias_task
from tasks.prepare import load_spec_task
from tasks.register import tracking_task
from tasks.results import PackageResult
from tasks.settings import push_image_task, serving_target_task


@flow(name="package", flow_run_name=named_after_config("package"))
def package(
    config: Path,
    workdir: Path = Path("artifacts"),
    tracking_uri: str | None = None,
    alias: str = "champion",
    target: Literal["process", "docker"] = "process",
) -> PackageResult:
    """Import the model behind a registry alias into BentoML and build its service bento.

    Args:
        config: dataset config (YAML)
        workdir: folder of the default MLflow database and the bento build staging
        tracking_uri: MLflow tracking URI (default: sqlite under workdir, or MLFLOW_TRACKING_URI)
        alias: registry alias to package (champion, challenger, previous)
        target: "docker" also builds a container image of the bento (needs a Docker engine), named after
            the `Lifecycle Serving Target` block's image repository and pushed with its registry credentials
    """
    spec = load_spec_task(config)
    tracking = tracking_task(workdir, spec.name, spec.registered_model_name, tracking_uri)
    version = resolve_alias_task(tracking, alias)
    model_tag, imported = import_model_task(tracking, spec, version)
    serving = serving_target_task(spec)
    base = base_image_task() if target == "docker" else ""
    bento_tag, built = build_bento_task(spec, model_tag, workdir, base)
    image, built_image = containerize_task(bento_tag, serving.image_repository) if target == "docker" else (None, False)
    if image and serving.push:
        push_image_task(spec, image)
    return PackageResult(
        model_name=spec.registered_model_name,
        model_version=version.version,
        data_version=version.tags.get("lifecycle.data_version", ""),
        bento_model_tag=model_tag,
        bento_tag=bento_tag,
        imported_model=imported,
        built_bento=built,
        image=image,
        built_image=built_image,
    )


if __name__ == "__main__":
    run(package)
