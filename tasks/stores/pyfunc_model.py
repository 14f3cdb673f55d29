"""The MLflow model, logged as code (MLflow's models-from-code): MLflow runs this file when it
loads the model, and it reads the `TabularModel`'s plain files — nothing is unpickled.

Only `tasks.core` is shipped beside it (the model's `code/`)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import polars as pl
from mlflow.pyfunc import PythonModel

from tasks.core.logs import as_text
from tasks.core.model import TabularModel


class TabularPyfunc(PythonModel):
    model: TabularModel

    def load_context(self, context) -> None:
        self.model = TabularModel.load(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """The answer's columns (`TabularModel.predict_frame`), a label as plain text as the signature says."""
        return as_text(self.model.predict_frame(pl.from_pandas(model_input))).to_pandas()


mlflow.models.set_model(TabularPyfunc())
