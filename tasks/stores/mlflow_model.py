"""The `TabularModel` as an MLflow model: logged as code with its plain files, the core package
as its only shipped code, an explicit signature and explicit requirements."""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import polars as pl
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import ColSpec, Schema

from tasks.core.model import TabularModel
from tasks.core.spec import DatasetSpec
from tasks.stores.shipped import copy_core

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def signature(model: TabularModel) -> ModelSignature:
    """MLflow signature from the spec and the task: the base feature columns in, the answer out (the
    task's score column, then its answer columns: probability, label; prediction, interval_low/high)."""
    spec = model.spec

    def mlflow_type(column: str) -> str:
        col = spec.columns[column]
        if col.type == "int":  # pandas holds a nullable int column as float (NaN for null)
            return "double" if col.nullable else "long"
        return {"float": "double", "bool": "boolean", "category": "string"}[col.type]

    inputs = Schema([ColSpec(mlflow_type(c), c, required=not spec.columns[c].nullable) for c in spec.base_features])
    answer = model.task.answer_schema(model.decision)
    outputs = Schema([ColSpec("double" if dtype.is_float() else "string", name) for name, dtype in answer.items()])
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


def log_model(model: TabularModel, train_frame: pl.DataFrame, metadata: dict[str, str]) -> ModelInfo:
    """Log `model` to the active MLflow run as `model`."""
    with tempfile.TemporaryDirectory(prefix="tabular-model-") as tmp:
        files = model.save(Path(tmp) / "model")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"model": str(files)},
            code_paths=[str(copy_core(Path(tmp) / "code"))],
            pip_requirements=pip_requirements(),
            signature=signature(model),
            input_example=input_example(train_frame, model.spec),
            metadata=metadata,
        )


def load_model(uri: str) -> TabularModel:
    """The `TabularModel` behind a pyfunc URI (models:/name@champion, runs:/…, models:/m-…)."""
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().model
