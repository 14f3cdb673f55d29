"""Registry tasks: the tracking settings of a run, registering a trained run as a new version,
promotion through the gate's decision (aliases), roll-back."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks import TrackingSettings
from tasks.common import UNCACHED, artifact_key
from tasks.core.gate import promotion
from tasks.events import MODEL_PROMOTED, emit_model_event
from tasks.results import RegisterResult, TrainResult
from tasks.settings import apply_tracking_credentials, overrides, saved_block
from tasks.stores.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_PREFIX,
    TrackingConfig,
    default_tracking,
    promote,
    register_version,
    rollback,
    run_tags,
    set_alias,
    set_version_tags,
    train_result,
    version_by_alias,
)


@task(name="load-train-result", **UNCACHED)
def train_result_task(cfg: TrackingConfig, run_id: str) -> TrainResult:
    return train_result(cfg, run_id)


@task(name="register", **UNCACHED)
def register_task(cfg: TrackingConfig, run_id: str) -> RegisterResult:
    """Register the run's model as `challenger`; move `champion` to it only if its gate passed.

    The gate decision is read from the run's tags (written by evaluate). A run with no
    decision is not promoted: the gate fails closed."""
    tags = run_tags(cfg, run_id)
    passed = tags.get("gate_passed") == "True"
    reason = tags.get("gate_reasons", "no gate decision recorded for this run")
    info, created = register_version(
        cfg,
        run_id,
        tags["model_uri"],
        {f"{TAG_PREFIX}{k}": tags.get(k, "") for k in ("data_version", "spec_hash", "training_hash")},
    )
    set_version_tags(cfg, info.version, {"gate_passed": passed, "gate_reasons": reason[:5000]})
    current = version_by_alias(cfg, CHAMPION)
    set_alias(cfg, CHALLENGER, info.version)
    logger = get_run_logger()
    step = promotion(info.version, current.version if current else None, passed)
    if step == "already_champion":
        decision, promoted, previous = f"v{info.version} is already the champion", False, None
    elif step == "promote":
        previous = promote(cfg, info.version)
        was = f"previous champion: v{previous}" if previous else "first champion"
        decision, promoted = f"promoted v{info.version} to champion ({was})", True
        emit_model_event(
            MODEL_PROMOTED,
            tags.get("dataset", cfg.experiment),
            {"model_name": cfg.model_name, "version": info.version, "previous_version": previous, "run_id": run_id},
        )
    else:
        previous = None
        keeps = f"v{current.version} stays champion" if current else "no champion yet"
        decision, promoted = f"gate failed, {keeps}: {reason}", False
    logger.info(decision)
    champion = version_by_alias(cfg, CHAMPION)
    create_markdown_artifact(
        key=f"{artifact_key(cfg.model_name)}-registry",
        markdown=f"### {cfg.model_name} v{info.version}\n\n{decision}\n\nGate: {reason}\n",
        description=decision[:200],
    )
    return RegisterResult(
        model_name=cfg.model_name,
        version=info.version,
        created=created,
        promoted=promoted,
        champion_version=champion.version if champion else None,
        previous_version=previous,
        reason=decision,
    )


@task(name="rollback", **UNCACHED)
def rollback_task(cfg: TrackingConfig) -> tuple[str, str]:
    return rollback(cfg)


@task(name="tracking", **UNCACHED)
def tracking_task(workdir: Path, experiment: str, model_name: str, tracking_uri: str | None) -> TrackingConfig:
    """The flow's `tracking_uri`, else the dataset's `Lifecycle Tracking` block, else
    MLFLOW_TRACKING_URI, else SQLite under the workdir."""

    block = saved_block(TrackingSettings, experiment)
    apply_tracking_credentials(block)
    saved = overrides(block)
    cfg = default_tracking(
        workdir,
        saved.get("experiment", experiment),
        saved.get("model_name", model_name),
        tracking_uri or saved.get("tracking_uri"),
        saved.get("registry_uri"),
    )
    cfg.activate()
    return cfg
