"""Every path under the workdir, in one place (the one folder `make run` and the flows write to)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workdir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def __fspath__(self) -> str:
        return str(self.root)

    # -- tracking (the default MLflow store) ----------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    # -- data -----------------------------------------------------------------------------
    def snapshots(self, dataset: str) -> Path:
        return self.root / "snapshots" / dataset

    def snapshot(self, dataset: str, data_version: str) -> Path:
        return self.snapshots(dataset) / data_version

    def snapshot_staging(self, dataset: str) -> Path:
        """A streamed snapshot is written here, then moved to its data version's folder."""
        return self.snapshots(dataset) / f".staging-{os.getpid()}"

    def quarantine(self, dataset: str, name: str) -> Path:
        """A quarantine file: `<source hash>-<spec hash>` (prepare), `batch-…` (monitor), `retrain-…`."""
        return self.root / "quarantine" / dataset / f"{name}.parquet"

    # -- training and evaluation -----------------------------------------------------------
    @property
    def optuna(self) -> Path:
        return self.root / "optuna"

    def evaluation(self, run_id: str) -> Path:
        return self.root / "evaluation" / run_id

    @property
    def compiled(self) -> Path:
        """Compiled boosters (lleaves object files), one per booster hash: the gate's and the bento's."""
        return self.root / "compiled"

    # -- serving ---------------------------------------------------------------------------
    def bento_build(self, bento_tag: str) -> Path:
        return self.root.resolve() / "bento-build" / bento_tag.replace(":", "-")

    def serving(self, dataset: str) -> Path:
        """Back-end logs and one folder per stable endpoint (port): its state and proxy."""
        return self.root.resolve() / "serving" / dataset

    def endpoint(self, dataset: str, port: int) -> Path:
        return self.serving(dataset) / str(port)

    @property
    def predictions(self) -> Path:
        """The prediction log's root: served bentos write `<dataset>/date=…/part-*.parquet` under it."""
        return self.root.resolve() / "predictions"

    def prediction_log(self, dataset: str) -> Path:
        return self.predictions / dataset

    def shadow_log(self, dataset: str) -> Path:
        """What a shadow back-end answered (mirrored requests, never returned to a client)."""
        return self.root.resolve() / "shadow" / dataset

    @property
    def label_store(self) -> Path:
        """Delayed labels, beside the prediction log (the bento derives it the same way)."""
        return self.root.resolve() / "labels"

    def labels(self, dataset: str) -> Path:
        return self.label_store / dataset

    # -- monitoring ------------------------------------------------------------------------
    def monitoring(self, dataset: str) -> Path:
        return self.root / "monitoring" / dataset

    @property
    def evidently_workspace(self) -> Path:
        return self.root / "monitoring" / "evidently"
