"""The model: raw rows in, probability and label out.

`TabularModel` carries everything scoring needs — the dataset spec (input schema, types,
categories), the shared feature code, the LightGBM booster, the decision threshold and where
it came from (data version, spec and training hashes). It is saved as plain files (the booster
in LightGBM's text format, the rest as JSON), so loading it runs no pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tasks.core import features
from tasks.core.calibration import Calibrator
from tasks.core.cast import cast_to_spec
from tasks.core.compiled import SMALL_BATCH, CompiledModel
from tasks.core.errors import DataError
from tasks.core.spec import DatasetSpec, memo, polars_dtype

if TYPE_CHECKING:
    import lightgbm as lgb

PROBABILITY = "probability"
LABEL = "label"
BOOSTER_FILE = "booster.txt"
MODEL_FILE = "model.json"


def is_positive(proba: np.ndarray, threshold: float) -> np.ndarray:
    """The decision rule, in one place: a probability at or above the threshold is positive."""
    return np.asarray(proba) >= threshold


def label_enum(spec: DatasetSpec) -> pl.Enum:
    """The labels as an Enum (negative first): how bulk answers carry them and the log stores them."""
    return pl.Enum([label for label in spec.target.labels if label != spec.target.positive] + [spec.target.positive])


class TabularModel:
    def __init__(
        self,
        spec: DatasetSpec,
        booster_text: str,
        threshold: float,
        metadata: dict[str, str],
        calibrator: Calibrator | None = None,
    ):
        self.spec = spec
        self.booster_text = booster_text
        self.threshold = float(threshold)
        self.metadata = dict(metadata)
        self.calibrator = calibrator  # applied to the booster's probabilities (the threshold is on calibrated ones)
        self.negative = next(label for label in spec.target.labels if label != spec.target.positive)
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
        body = {"spec": self.spec.model_dump(mode="json"), "threshold": self.threshold, "metadata": self.metadata}
        if self.calibrator is not None:
            body["calibrator"] = self.calibrator.model_dump()
        (folder / MODEL_FILE).write_text(json.dumps(body, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path) -> TabularModel:
        body = json.loads((Path(folder) / MODEL_FILE).read_text())
        spec = DatasetSpec.model_validate(body["spec"])
        calibrator = Calibrator.model_validate(body["calibrator"]) if body.get("calibrator") else None
        booster = (Path(folder) / BOOSTER_FILE).read_text()
        return cls(spec, booster, body["threshold"], body["metadata"], calibrator)

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
        """Probabilities of a feature matrix: the compiled model when set, else the booster; then
        the calibrator, if the model has one."""
        if self.compiled is not None:
            proba = self.compiled.predict(matrix)
        else:
            # one thread for small inputs: OpenMP start-up and contention between concurrent
            # requests cost far more than a few rows take to predict
            threads = 1 if len(matrix) < SMALL_BATCH else 0
            proba = self.booster.predict(matrix, num_threads=threads)
        return proba if self.calibrator is None else self.calibrator.apply(proba)

    def predict_proba(self, rows: pl.DataFrame) -> np.ndarray:
        return self.predict_matrix(self.matrix(rows))

    def labels(self, proba: np.ndarray) -> np.ndarray:
        return np.where(is_positive(proba, self.threshold), self.spec.target.positive, self.negative)

    def label_series(self, proba: np.ndarray) -> pl.Series:
        """`labels` as a Polars column (a `label_enum`), without a Python string per row; NaN (not
        scored) → null."""
        codes = pl.Series(is_positive(proba, self.threshold).astype(np.int8))
        labels = pl.Series(LABEL, [self.negative, self.spec.target.positive], dtype=label_enum(self.spec)).gather(codes)
        return pl.select(pl.when(pl.Series(np.isnan(proba))).then(None).otherwise(labels).alias(LABEL)).to_series()

    def predict_frame(self, rows: pl.DataFrame) -> pl.DataFrame:
        proba = self.predict_proba(rows)
        return pl.DataFrame({PROBABILITY: proba, LABEL: self.labels(proba)})
