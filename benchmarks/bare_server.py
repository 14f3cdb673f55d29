"""The bare baseline for the serving benchmark: the same LightGBM booster behind a minimal
Starlette endpoint — orjson in, dict lookups for categories, the derived features' own row rules,
`Booster.predict`, the task's answer (a probability and label; a value and its interval), orjson out.
No validation, no logging, no metrics: what the hardware allows. The same routes with `_compiled`
use the booster compiled by lleaves (the same compiler and target as the packaged service).

    BARE_MODEL_DIR=<exported model folder> uvicorn benchmarks.bare_server:app --workers 2
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import lightgbm as lgb
import lleaves
import numpy as np
import orjson
import polars as pl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasks.core.compiled import portable_cpu
from tasks.core.ops import OPS
from tasks.core.spec import DatasetSpec
from tasks.core.task.kinds import task_of

FOLDER = Path(os.environ["BARE_MODEL_DIR"])
BOOSTER = lgb.Booster(model_file=str(FOLDER / "model.txt"))
META = json.loads((FOLDER / "meta.json").read_text())
FEATURES: list[str] = META["base_features"]
CODES: dict[str, dict[str, float]] = {
    c: {v: float(i) for i, v in enumerate(cats)} for c, cats in META["categories"].items()
}
DERIVED: list[tuple[str, list[str]]] = [(op, inputs) for op, inputs in META["derived"]]
TASK = task_of(DatasetSpec.model_validate(META["spec"]))
DECISION = TASK.decision_from_json(META["decision"])
COMPILED = lleaves.Model(model_file=str(FOLDER / "model.txt"))
COMPILED.compile(target_cpu=portable_cpu(), target_cpu_features="")


def _row(record: dict) -> list[float]:
    values = [
        CODES[f].get(record[f], np.nan) if f in CODES else (np.nan if record.get(f) is None else float(record[f]))
        for f in FEATURES
    ]
    for op, inputs in DERIVED:
        args = [record.get(name) for name in inputs]
        value = None if any(a is None for a in args) else OPS[op].row(*(float(a) for a in args))
        values.append(np.nan if value is None else value)
    return values


def _answer(scores) -> Response:
    out = TASK.answer_json(TASK.answer_rows(scores, DECISION), DECISION)
    return Response(orjson.dumps({"predictions": out}), media_type="application/json")


async def predict(request: Request) -> Response:
    records = orjson.loads(await request.body())["records"]
    return _answer(BOOSTER.predict(np.array([_row(r) for r in records], dtype=np.float64), num_threads=1))


async def predict_compiled(request: Request) -> Response:
    records = orjson.loads(await request.body())["records"]
    return _answer(COMPILED.predict(np.array([_row(r) for r in records], dtype=np.float64), n_jobs=1))


async def _matrix(request: Request) -> np.ndarray:
    frame = pl.read_parquet(io.BytesIO(await request.body()))
    return np.column_stack(
        [
            frame.get_column(f).replace_strict(CODES[f], default=None, return_dtype=pl.Float64).to_numpy()
            if f in CODES
            else frame.get_column(f).cast(pl.Float64).to_numpy()
            for f in FEATURES
        ]
        + [
            frame.select(OPS[op].expr(*(pl.col(name).cast(pl.Float64) for name in inputs))).to_series().to_numpy()
            for op, inputs in DERIVED
        ]
    )


def _table(scores) -> Response:
    out = io.BytesIO()
    pl.DataFrame({TASK.score_column: scores}).write_parquet(out)
    return Response(out.getvalue(), media_type="application/vnd.apache.parquet")


async def score(request: Request) -> Response:
    return _table(BOOSTER.predict(await _matrix(request)))


async def score_compiled(request: Request) -> Response:
    return _table(COMPILED.predict(await _matrix(request), n_jobs=os.cpu_count()))


app = Starlette(
    routes=[
        Route(path, endpoint, methods=["POST"])
        for path, endpoint in {
            "/predict": predict,
            "/predict_compiled": predict_compiled,
            "/score": score,
            "/score_compiled": score_compiled,
        }.items()
    ]
)
