"""What each phase returns — the flows' results, in one place (also the last JSON line of
`python -m flows.<phase>`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tasks.core.feedback import LabelCoverage, ServedWindow
from tasks.core.gate import GateDecision, Metrics
from tasks.core.guardrails import StepReport
from tasks.core.kpis import KpiFigure
from tasks.core.monitoring import ColumnDrift, NullRate, PerformanceDrift
from tasks.stores.backends import Backend
from tasks.stores.snapshots import SnapshotManifest


class PrepareResult(BaseModel):
    dataset: str
    data_version: str
    spec_hash: str
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    rows_dropped: int = 0  # exact duplicates, under `quarantine.duplicates: drop`
    train: int
    validation: int
    test: int
    manifest_path: str
    quarantine_path: str

    @classmethod
    def of(cls, manifest: SnapshotManifest, manifest_path: Path) -> PrepareResult:
        return cls(
            dataset=manifest.dataset,
            data_version=manifest.data_version,
            spec_hash=manifest.spec_hash,
            **manifest.rows.model_dump(),
            manifest_path=str(manifest_path),
            quarantine_path=manifest.quarantine_path,
        )


class TrialRecord(BaseModel):
    number: int
    state: str
    value: float | None
    params: dict[str, float | int]
    best_iteration: int | None
    started_at: datetime
    finished_at: datetime


class TuningResult(BaseModel):
    best_params: dict[str, float | int]
    best_value: float
    best_iteration: int
    n_trials: int
    n_pruned: int
    seconds: float
    trials: list[TrialRecord]


class TrainResult(BaseModel):
    dataset: str
    data_version: str
    run_id: str
    model_uri: str
    manifest_path: str
    decision: dict  # the task's decision fitted on validation, as the model's JSON holds it (binary: threshold)
    best_params: dict[str, float | int]
    validation_metric: str  # the task's tuning metric by its metric name (roc_auc, rmse)
    validation_score: float  # the candidate's, on the validation split (the study's best)
    baselines_validation: dict[str, float]  # each baseline's `validation_metric` on the validation split
    n_trials: int
    n_pruned: int
    reused_run: bool
    selected_features: list[str] | None = None  # with training.feature_selection: the features the model uses


class EvaluationResult(BaseModel):
    dataset: str
    data_version: str
    run_id: str
    threshold: float | None = None  # the candidate's decision threshold, where its task has one
    candidate: Metrics
    baselines: dict[str, Metrics]
    champion: Metrics | None
    champion_version: str | None
    candidate_is_champion: bool
    gate: GateDecision
    reused: bool = False
    reliability: list[dict] = []  # the candidate's reliability table (test split)
    fairness: dict[str, list[dict]] = {}  # per protected column, its groups' figures
    errors: list[dict] = []  # error clusters, worst excess error rate first


class RegisterResult(BaseModel):
    model_name: str
    version: str
    created: bool
    promoted: bool
    champion_version: str | None
    previous_version: str | None
    reason: str


class PackageResult(BaseModel):
    model_name: str
    model_version: str
    data_version: str
    bento_model_tag: str
    bento_tag: str
    imported_model: bool
    built_bento: bool
    image: str | None = None
    built_image: bool = False


class RolloutResult(BaseModel):
    dataset: str
    endpoint: str
    model_version: str
    previous_version: str | None
    backend: Backend
    switched: bool
    strategy: str = "blue_green"
    steps: list[StepReport] = []  # each step's figures and verdict (staging, shadow, canary, watch)


class Links(BaseModel):
    """Where a person looks (None: the run does not know that UI's address)."""

    prefect_run: str | None = None
    mlflow_run: str | None = None
    evidently_project: str | None = None


class LifecycleOutputs(BaseModel):
    """The workflow's outputs: the model, its metrics, its endpoint and the dashboards."""

    model_id: str  # <registered model name>/<version>
    model_name: str
    model_version: str
    champion_version: str | None
    experiment_id: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    artifact_uri: str  # where the model's files are
    metrics: dict[str, float]  # the candidate's test metrics
    endpoint: str | None = None  # when the run rolled the champion out
    links: Links


class LifecycleResult(BaseModel):
    prepare: PrepareResult
    train: TrainResult
    evaluate: EvaluationResult
    registry: RegisterResult
    package: PackageResult
    rollout: RolloutResult | None = None
    outputs: LifecycleOutputs


class LabelsResult(BaseModel):
    dataset: str
    file: str
    rows_in: int
    stored: int
    quarantined: int
    quarantine_path: str | None = None
    stored_path: str | None = None


class DriftResult(BaseModel):
    dataset: str
    model_version: str
    batch: str | None  # a file or folder handed in; None: the served window
    window: ServedWindow | None = None
    rows: int
    rows_labelled: int = 0
    rows_quarantined: int
    quarantine_path: str | None = None
    status: Literal["drift", "no_drift", "insufficient_data"]
    drift_share: float
    drifted_columns: list[str]
    columns: list[ColumnDrift]
    prediction: ColumnDrift | None = None
    target: ColumnDrift | None = None  # arrived labels vs the training target (from `min_rows` labels)
    null_rates: list[NullRate] = []
    coverage: LabelCoverage | None = None
    performance: PerformanceDrift | None = None
    reasons: list[str] = []
    report_path: str | None
    measured_at: datetime
    mlflow_run_id: str | None = None
    event_id: str | None = None


class RetrainResult(BaseModel):
    dataset: str
    status: Literal["promoted", "kept", "stale", "skipped"]
    reasons: list[str]
    base_version: str
    champion_version: str | None
    challenger_version: str | None = None
    data_version: str | None = None
    source: str | None = None  # the batch, or the served window, the new rows came from
    rows_new: int = 0
    gate: GateDecision | None = None
    figures: dict[str, dict[str, float]] = {}  # gate metrics of challenger, champion, baselines
    served: list[str] = []
    bento: str | None = None  # packaged for `make serve` when no endpoint was live


class RollbackResult(BaseModel):
    model_name: str
    from_version: str
    to_version: str


class KpiResult(BaseModel):
    dataset: str
    days: float
    figures: list[KpiFigure]  # each success criterion: value, target, verdict
    missed: list[str]
    mlflow_run_id: str
    event_id: str | None = None
