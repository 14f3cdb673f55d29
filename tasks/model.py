"""The model artifact: raw rows in, probabilities out.

`TabularModel` carries everything serving needs — the dataset spec (input schema,
types, categories), the shared feature code, the LightGBM booster, the decision
threshold and where it came from (data version, spec and training hashes). It is
an MLflow pyfunc, so `mlflow.pyfunc.load_model("models:/<name>@champion")` gives
a predictor that needs nothing else.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl

from tasks import features
from tasks.errors import DataError
from tasks.spec import DatasetSpec, cast_to_spec, memo, polars_dtype

SMALL_BATCH = 2048
PROBABILITY = "probability"
LABEL = "label"


class TabularModel(mlflow.pyfunc.PythonModel):
    def __init__(self, spec: DatasetSpec, booster_text: str, threshold: float, metadata: dict[str, str]):
        self.spec_json = spec.model_dump_json()
        self.booster_text = booster_text
        self.threshold = float(threshold)
        self.metadata = dict(metadata)
        self._spec: DatasetSpec | None = None
        self._booster = None

    # pickled without the live booster; rebuilt lazily
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in {"_spec", "_booster"}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _spec=None, _booster=None)

    @property
    def spec(self) -> DatasetSpec:
        if self._spec is None:
            self._spec = DatasetSpec.model_validate_json(self.spec_json)
        return self._spec

    @property
    def booster(self):
        if self._booster is None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self.booster_text)
        return self._booster

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

    def predict_proba(self, rows: pl.DataFrame) -> np.ndarray:
        matrix = self.matrix(rows)
        # one thread for small inputs: OpenMP start-up and contention between concurrent
        # requests cost far more than a few rows take to predict
        threads = 1 if len(matrix) < SMALL_BATCH else 0
        return self.booster.predict(matrix, num_threads=threads)

    def predict_frame(self, rows: pl.DataFrame) -> pl.DataFrame:
        proba = self.predict_proba(rows)
        labels = self.spec.target.labels
        negative = next(label for label in labels if label != self.spec.target.positive)
        return pl.DataFrame(
            {
                PROBABILITY: proba,
                LABEL: np.where(proba >= self.threshold, self.spec.target.positive, negative),
            }
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.predict_frame(pl.from_pandas(model_input)).to_pandas()


def signature(spec: DatasetSpec):
    """MLflow signature from the spec: the base feature columns in, probability and label out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    def mlflow_type(column: str) -> str:
        col = spec.columns[column]
        if col.type == "int":  # pandas holds a nullable int column as float (NaN for null)
            return "double" if col.nullable else "long"
        return {"float": "double", "bool": "boolean", "category": "string"}[col.type]

    inputs = Schema([ColSpec(mlflow_type(c), c, required=not spec.columns[c].nullable) for c in spec.base_features])
    outputs = Schema([ColSpec("double", PROBABILITY), ColSpec("string", LABEL)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(frame: pl.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A few rows as the signature types them (a nullable int column is a double in pandas)."""
    nullable_ints = [c for c in spec.base_features if spec.columns[c].type == "int" and spec.columns[c].nullable]
    rows = frame.select(spec.base_features).head(3)
    return rows.with_columns(pl.col(nullable_ints).cast(pl.Float64)).to_pandas()


def pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference of them costs ~11 s a model."""
    names = ["mlflow", "lightgbm", "polars", "pandas", "numpy", "pydantic", "pyyaml", "pyarrow"]
    return [f"{name}=={version(name)}" for name in names]
