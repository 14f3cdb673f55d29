"""The model: raw rows in, the task's answer out (a probability and a label; a value and an interval).

`TabularModel` carries everything scoring needs — the dataset spec (input schema, types,
categories, the task), the shared feature code, the LightGBM booster, the task's decision fitted
on validation (a threshold and calibrator, an interval) and where it came from (data version,
spec and training hashes). It is saved as plain files (the booster in LightGBM's text format,
the rest as JSON), so loading it runs no pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tasks.core import features
from tasks.core.cast import cast_to_spec
from tasks.core.compiled import SMALL_BATCH, CompiledModel
from tasks.core.errors import DataError
from tasks.core.spec import DatasetSpec, memo, polars_dtype
from tasks.core.task import Decision
from tasks.core.task.kinds import task_of

if TYPE_CHECKING:
    import lightgbm as lgb

BOOSTER_FILE = "booster.txt"
MODEL_FILE = "model.json"


class TabularModel:
    def __init__(self, spec: DatasetSpec, booster_text: str, decision: Decision, metadata: dict[str, str]):
        self.spec = spec
        self.task = task_of(spec)
        self.booster_text = booster_text
        self.decision = decision  # the task's, fitted on validation: applied to every answer
        self.metadata = dict(metadata)
        self._booster: lgb.Booster | None = None
        self.compiled: CompiledModel | None = None  # set by whoever serves it (never saved): else the booster

    @property
    def booster(self) -> lgb.Booster:
        """LightGBM's booster, built on first use: a service scoring with the compiled model never
        imports LightGBM (and scikit-learn, SciPy with it: ~80 MB a worker)."""
        if self._booster is None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self.booster_text)
        return self._booster

    # -- files --------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BOOSTER_FILE).write_text(self.booster_text)
        body = {
            "spec": self.spec.model_dump(mode="json"),
            **self.task.decision_json(self.decision),
            "metadata": self.metadata,
        }
        (folder / MODEL_FILE).write_text(json.dumps(body, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path) -> TabularModel:
        body = json.loads((Path(folder) / MODEL_FILE).read_text())
        spec = DatasetSpec.model_validate(body["spec"])
        booster = (Path(folder) / BOOSTER_FILE).read_text()
        return cls(spec, booster, task_of(spec).decision_from_json(body), body["metadata"])

    # -- scoring ------------------------------------------------------------------------
    def matrix(self, rows: pl.DataFrame) -> np.ndarray:
        """Validate types and build the feature matrix with the shared feature code."""
        spec = self.spec
        missing = [c for c in spec.base_features if c not in rows.columns]
        if missing:
            raise DataError(f"missing input columns: {missing}")
        declared = memo(
            spec, "base_dtypes", lambda: {c: polars_dtype(spec.columns[c].type) for c in spec.base_features}
        )
        if all(rows.schema[c] == dtype for c, dtype in declared.items()):
            return features.feature_matrix(rows, spec)  # already typed (validated requests): nothing to parse
        typed, failures = cast_to_spec(rows, spec, spec.base_features)
        if failures.height:
            first = failures.row(0, named=True)
            raise DataError(
                f"{failures.height} values have the wrong type, e.g. row {first['row']} "
                f"{first['column']}={first['value']!r} is not {first['check']}"
            )
        return features.feature_matrix(typed, spec)

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """The scores of a feature matrix (the task's `score_column`): the compiled model's outputs
        when set, else the booster's; then the task's decision (a calibrator, if the model has one)."""
        if self.compiled is not None:
            raw = self.compiled.predict(matrix)
        else:
            # one thread for small inputs: OpenMP start-up and contention between concurrent
            # requests cost far more than a few rows take to predict
            threads = 1 if len(matrix) < SMALL_BATCH else 0
            raw = self.booster.predict(matrix, num_threads=threads)
        return self.task.scores(raw, self.decision)

    def predict_scores(self, rows: pl.DataFrame) -> np.ndarray:
        return self.predict_matrix(self.matrix(rows))

    def answer_columns(self, scores: np.ndarray) -> dict[str, pl.Series]:
        """The answer's columns after the score (a label, an interval): null where not scored (NaN)."""
        return self.task.answer_columns(scores, self.decision)

    def predict_frame(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The answers to `rows`: the score column, then the task's other answer columns."""
        scores = self.predict_scores(rows)
        return pl.DataFrame([pl.Series(self.task.score_column, scores, dtype=pl.Float64),
                             *self.answer_columns(scores).values()])  # fmt: skip
