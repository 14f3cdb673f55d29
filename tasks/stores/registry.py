"""MLflow: tracking runs, the model registry and its aliases (no stages).

Aliases: `challenger` is the newest candidate, `champion` what serves, `previous`
the champion before it (for roll-back). Every write is idempotent: a retried or
repeated step finds what it already wrote instead of writing it twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.core.errors import ModelIntegrityError
from tasks.core.integrity import check_model_files, manifest_digest, model_manifest
from tasks.core.model import TabularModel
from tasks.results import TrainResult
from tasks.stores import mlflow_model
from tasks.stores.workdir import Workdir

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
DATABASE_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql"}
TAG_PREFIX = "lifecycle."
# the model's content hash and the files it covers (tasks.core.integrity), on the run and the version
DIGEST, FILES = "model_sha256", "model_files"
DIGEST_TAG, FILES_TAG = f"{TAG_PREFIX}{DIGEST}", f"{TAG_PREFIX}{FILES}"


class TrackingConfig(BaseModel):
    """Where runs and models go. Any MLflow tracking URI works (sqlite file, server, …)."""

    tracking_uri: str
    registry_uri: str | None = None
    experiment: str
    model_name: str
    artifact_location: str | None = None

    def cache_token(self) -> str:
        return f"{self.tracking_uri}|{self.registry_uri}|{self.experiment}|{self.model_name}"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    def activate(self) -> str:
        """Point the mlflow module at this store; returns the experiment id (created if missing)."""

        import mlflow

        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; keep the user's environment
        # as it was, so another workdir later in this process gets its own store
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return self.experiment_id(self.experiment)

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created if missing; a sibling of the main experiment
        keeps its artifacts beside the main one's (never in the current directory)."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = self.artifact_location
        if location and name != self.experiment:
            location = f"{location.rstrip('/')}/{name}"
        return client.create_experiment(name, artifact_location=location)


def default_tracking(
    workdir: Path, experiment: str, model_name: str, tracking_uri: str | None = None, registry_uri: str | None = None
):
    """SQLite tracking and registry under the workdir unless a URI is given (or MLFLOW_TRACKING_URI).

    With a database backend (SQLite, PostgreSQL, MySQL…) new experiments keep their artifacts
    under the workdir; a tracking server decides for itself where artifacts go."""

    where = Workdir(Path(workdir).resolve())
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{where.mlflow_db}"
    artifacts = None
    if uri.split(":", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES:
        where.root.mkdir(parents=True, exist_ok=True)
        artifacts = where.mlflow_artifacts.as_uri()
    return TrackingConfig(
        tracking_uri=uri,
        registry_uri=registry_uri,
        experiment=experiment,
        model_name=model_name,
        artifact_location=artifacts,
    )


# -- runs -------------------------------------------------------------------------------------
def find_run(cfg: TrackingConfig, key: str) -> str | None:
    """A finished run that was logged with this training key, if any."""
    experiment_id = cfg.activate()
    runs = cfg.client().search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PREFIX}training_key` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def log_trials(cfg: TrackingConfig, experiment_id: str, parent_run_id: str, trials: list[Any], metric: str) -> None:
    """One nested run per Optuna trial, with its params, value (as `metric`) and real start/end times."""
    from mlflow.entities import Metric, Param, RunTag

    client = cfg.client()
    for trial in trials:
        started = int(trial.started_at.timestamp() * 1000)
        run = client.create_run(
            experiment_id,
            start_time=started,
            tags={"mlflow.parentRunId": parent_run_id, "mlflow.runName": f"trial-{trial.number:03d}"},
        )
        metrics = [Metric(metric, trial.value, started, 0)] if trial.value is not None else []
        if trial.best_iteration is not None:
            metrics.append(Metric("best_iteration", trial.best_iteration, started, 0))
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            tags=[RunTag(f"{TAG_PREFIX}trial_state", trial.state)],
        )
        status = "FINISHED" if trial.state == "COMPLETE" else "KILLED"
        client.set_terminated(run.info.run_id, status=status, end_time=int(trial.finished_at.timestamp() * 1000))


def log_artifact_files(cfg: TrackingConfig, run_id: str, files: list[Path], folder: str) -> None:
    client = cfg.client()
    for path in files:
        client.log_artifact(run_id, str(path), folder)


def log_text(cfg: TrackingConfig, run_id: str, text: str, name: str) -> None:
    cfg.client().log_text(run_id, text, name)


def log_json(cfg: TrackingConfig, run_id: str, payload: Any, name: str) -> None:
    cfg.client().log_text(run_id, json.dumps(payload, indent=2, default=str), name)


# Baseline models: skops files (a schema of plain values, no pickle); loading accepts only the
# scikit-learn types a baseline is built of (skops trusts plain values and arrays itself).
TRUSTED_PREFIX, TRUSTED_TYPES = "sklearn.", {"numpy.dtype"}


def save_baseline(cfg: TrackingConfig, run_id: str, model: Any, name: str) -> None:
    import skops.io

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.skops"
        skops.io.dump(model, path)
        cfg.client().log_artifact(run_id, str(path), "baselines")


def load_baseline(cfg: TrackingConfig, run_id: str, name: str) -> Any:
    import mlflow
    import skops.io

    cfg.activate()
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"baselines/{name}.skops", dst_path=tmp)
        types = skops.io.get_untrusted_types(file=path)
        refused = [t for t in types if not (t.startswith(TRUSTED_PREFIX) or t in TRUSTED_TYPES)]
        if refused:
            raise ModelIntegrityError(f"baseline {name} of run {run_id} holds types outside scikit-learn: {refused}")
        return skops.io.load(path, trusted=types)


def run_tags(cfg: TrackingConfig, run_id: str) -> dict[str, str]:
    tags = cfg.client().get_run(run_id).data.tags
    return {k.removeprefix(TAG_PREFIX): v for k, v in tags.items() if k.startswith(TAG_PREFIX)}


def set_tags(cfg: TrackingConfig, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    cfg.client().log_batch(run_id, tags=[RunTag(f"{TAG_PREFIX}{k}", str(v)) for k, v in tags.items()])


def log_metrics(cfg: TrackingConfig, run_id: str, metrics: dict[str, float], prefix: str = "") -> None:

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(f"{prefix}{k}", float(v), now, 0)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(v)
    ]
    cfg.client().log_batch(run_id, metrics=batch)


# -- registry ----------------------------------------------------------------------------------
class VersionInfo(BaseModel):
    version: str
    run_id: str | None
    aliases: list[str]
    tags: dict[str, str]


def _info(mv) -> VersionInfo:
    return VersionInfo(version=str(mv.version), run_id=mv.run_id, aliases=list(mv.aliases or []), tags=dict(mv.tags))


def version_by_alias(cfg: TrackingConfig, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    try:
        return _info(cfg.client().get_model_version_by_alias(cfg.model_name, alias))
    except MlflowException:
        return None


def versions(cfg: TrackingConfig) -> list[VersionInfo]:
    from mlflow.exceptions import MlflowException

    try:
        found = cfg.client().search_model_versions(f"name = '{cfg.model_name}'")
    except MlflowException:
        return []
    return sorted((_info(v) for v in found), key=lambda v: int(v.version))


def register_version(
    cfg: TrackingConfig, run_id: str, model_uri: str, tags: dict[str, str]
) -> tuple[VersionInfo, bool]:
    """The registry version of this run's model: found if it exists, else created. (info, created)"""
    from mlflow.exceptions import MlflowException

    client = cfg.client()
    cfg.activate()
    existing = [v for v in versions(cfg) if v.run_id == run_id]
    if existing:
        if DIGEST_TAG not in existing[0].tags:  # registered, but stopped before its hash was recorded
            record_version_hash(cfg, existing[0].version, run_id)
        return existing[0], False
    with contextlib.suppress(MlflowException):  # it may exist already
        client.create_registered_model(cfg.model_name)
    mv = client.create_model_version(cfg.model_name, model_uri, run_id=run_id, tags=tags)
    record_version_hash(cfg, str(mv.version), run_id)
    return _info(client.get_model_version(cfg.model_name, mv.version)), True


def record_version_hash(cfg: TrackingConfig, version: str, run_id: str) -> str:
    """Hash the registered version's files, check them against the hash recorded when the run
    logged the model, and record it as the version's `lifecycle.model_sha256` tag."""
    run_tags_ = cfg.client().get_run(run_id).data.tags
    recorded = json.loads(run_tags_[FILES_TAG]) if FILES_TAG in run_tags_ else None
    label = f"{cfg.model_name} v{version} (run {run_id})"
    with tempfile.TemporaryDirectory(prefix="model-files-") as tmp:
        local = download_model(cfg, f"models:/{cfg.model_name}/{version}", Path(tmp))
        digest = check_model_files(local, run_tags_.get(DIGEST_TAG), recorded, label)
        manifest = model_manifest(local)
    set_version_tags(cfg, version, {DIGEST_TAG: digest, FILES_TAG: json.dumps(manifest, sort_keys=True)})
    return digest


def set_alias(cfg: TrackingConfig, alias: str, version: str) -> None:
    cfg.client().set_registered_model_alias(cfg.model_name, alias, version)


def set_version_tags(cfg: TrackingConfig, version: str, tags: dict[str, Any]) -> None:
    client = cfg.client()
    for k, v in tags.items():
        client.set_model_version_tag(cfg.model_name, version, k, str(v))


def promote(cfg: TrackingConfig, version: str) -> str | None:
    """Move `champion` to `version`; the old champion keeps `previous`. Returns the old champion."""
    old = version_by_alias(cfg, CHAMPION)
    if old is not None and old.version == version:
        return old.version
    if old is not None:
        set_alias(cfg, PREVIOUS, old.version)
        set_version_tags(cfg, version, {"previous_champion": old.version})
    set_alias(cfg, CHAMPION, version)
    return old.version if old else None


def rollback(cfg: TrackingConfig) -> tuple[str, str]:
    """Move `champion` back to `previous`. Returns (from version, to version)."""
    current = version_by_alias(cfg, CHAMPION)
    previous = version_by_alias(cfg, PREVIOUS)
    if current is None or previous is None:
        raise LookupError(f"{cfg.model_name}: nothing to roll back to (champion={current}, previous={previous})")
    set_alias(cfg, CHAMPION, previous.version)
    set_version_tags(cfg, current.version, {"rolled_back": "true"})
    older = previous.tags.get("previous_champion")
    client = cfg.client()
    if older:
        set_alias(cfg, PREVIOUS, older)
    else:
        client.delete_registered_model_alias(cfg.model_name, PREVIOUS)
    return current.version, previous.version


def log_model(cfg: TrackingConfig, run_id: str, model: TabularModel, train_frame: Any, metadata: dict[str, str]) -> Any:
    """Log `model` to the active run `run_id` and record its content hash on the run (the hash
    registration checks and copies to the version). Returns MLflow's ModelInfo."""
    info = mlflow_model.log_model(model, train_frame, metadata)
    with tempfile.TemporaryDirectory(prefix="model-files-") as tmp:
        manifest = model_manifest(download_model(cfg, info.model_uri, Path(tmp)))
    set_tags(cfg, run_id, {DIGEST: manifest_digest(manifest), FILES: json.dumps(manifest, sort_keys=True)})
    return info


def download_model(cfg: TrackingConfig, uri: str, folder: Path) -> Path:
    """The model's files behind `uri`, copied into `folder` (nothing of them is run)."""
    import mlflow

    cfg.activate()
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))


def recorded_hash(cfg: TrackingConfig, uri: str) -> tuple[str, str | None, dict[str, str] | None, str]:
    """(the URI pinned to one version or run, recorded hash, recorded manifest, a name for errors).

    A registry URI (models:/name/version, models:/name@alias) is checked against the version's
    tag, a run's model (runs:/id/…, models:/m-…) against the run's."""
    client = cfg.client()
    ref = uri.removeprefix("models:/")
    if uri.startswith("runs:/") or (uri.startswith("models:/") and ref.startswith("m-")):
        if uri.startswith("runs:/"):
            run_id = uri.removeprefix("runs:/").split("/")[0]
        else:
            run_id = client.get_logged_model(ref.split("/")[0]).source_run_id
        tags, pinned, label = client.get_run(run_id).data.tags, uri, f"model {uri} (run {run_id})"
    elif uri.startswith("models:/"):
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            mv = client.get_model_version(name, number)
        tags, pinned, label = mv.tags, f"models:/{name}/{mv.version}", f"{name} v{mv.version} ({uri})"
    else:
        raise ModelIntegrityError(f"{uri}: not a registry or run model URI; no content hash to check it against")
    files = json.loads(tags[FILES_TAG]) if FILES_TAG in tags else None
    return pinned, tags.get(DIGEST_TAG), files, label


def load_model(cfg: TrackingConfig, uri: str) -> TabularModel:
    """The `TabularModel` behind a pyfunc URI (models:/name@champion, models:/name/3, runs:/…,
    models:/m-…). Its files are downloaded and checked against the recorded content hash before
    MLflow runs the model's code; files that differ raise `ModelIntegrityError`."""
    pinned, expected, recorded, label = recorded_hash(cfg, uri)
    with tempfile.TemporaryDirectory(prefix="model-files-") as tmp:
        local = download_model(cfg, pinned, Path(tmp))
        check_model_files(local, expected, recorded, label)
        return mlflow_model.load_model(str(local))  # reads every file now: the folder can go


# -- results passed between phases ----------------------------------------------------------------


TRAIN_RESULT = "train_result.json"


def training_key(data_version: str, training_hash: str) -> str:
    return f"{data_version}-{training_hash}"


def train_result(cfg: TrackingConfig, run_id: str) -> TrainResult:
    """What the train phase returned for this run (stored with the run)."""
    import mlflow

    cfg.activate()
    return TrainResult.model_validate(mlflow.artifacts.load_dict(f"runs:/{run_id}/{TRAIN_RESULT}"))


def logged_training(cfg: TrackingConfig, data_version: str, training_hash: str) -> TrainResult | None:
    """The candidate already logged for this data version and training config, if any."""
    run_id = find_run(cfg, training_key(data_version, training_hash))
    return train_result(cfg, run_id).model_copy(update={"reused_run": True}) if run_id else None


def version_manifest(cfg: TrackingConfig, model_version: str) -> str:
    """The snapshot manifest a registry version was trained on."""
    run_id = cfg.client().get_model_version(cfg.model_name, model_version).run_id
    return train_result(cfg, run_id).manifest_path
