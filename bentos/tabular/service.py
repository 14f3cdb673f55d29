"""The served model: a BentoML service generated from the dataset spec.

`bundle.json` beside this file (written by the package phase) names the BentoML
model and carries the dataset spec; the request model is generated from that spec,
so it must be read when this module is imported — the one file read at import.
Preprocessing is the shared `tasks.core.features` code: the Polars path for tables, its row-wise twin
for records; the service imports nothing of ours but `tasks.core`. `POST /predict` is answered by
`RequestGuard` itself, ahead of BentoML's per-call machinery (`LIFECYCLE_FAST_PATH`), with the same
request model, the same answer and the same log as the typed endpoint it stands in for.
The answer's shape is the task's (`tasks.core.task`): a probability and a label, or a predicted value
and its interval; the service asks the task and never tests its kind.
Every scored row gets a `prediction_id`, returned and logged; the truth sent later to
`/feedback` under that id (or the config's id column) goes to the label store, where monitoring
joins it to the log.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
import orjson
import polars as pl
from bentoml._internal.server.http import traffic
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles

from tasks.core.cast import FAILURE_SCHEMA
from tasks.core.compiled import CompiledUnavailable, load_compiled, switched_off
from tasks.core.errors import DataError, ModelIntegrityError, TableTooLarge
from tasks.core.features import category_enum, row_encoder
from tasks.core.feedback import LABEL_SCHEMA, PREDICTION_ID, new_prediction_ids
from tasks.core.integrity import check_model_files
from tasks.core.logs import SERVED_PARQUET, LogEvents, PredictionLog, as_text, label_root, log_root, write_part
from tasks.core.model import BOOSTER_FILE, TabularModel
from tasks.core.records import example_record, label_model, record_model, records_frame
from tasks.core.schema import typed_and_encoded, typed_with_failures
from tasks.core.spec import DatasetSpec, text_form
from tasks.core.tables import TableLimits, read_table
from tasks.core.task.kinds import task_of

BUNDLE = json.loads(Path(os.environ.get("LIFECYCLE_BUNDLE", Path(__file__).with_name("bundle.json"))).read_text())
SPEC = DatasetSpec.model_validate(BUNDLE["spec"])
TASK = task_of(SPEC)
# the model's decision (checked against the model's own when it loads): it fixes the answer's fields
DECISION = TASK.decision_from_json(BUNDLE["decision"])
Record = record_model(SPEC)
Label = label_model(SPEC)
MODEL_VERSION = str(BUNDLE["model_version"])
logger = logging.getLogger("bentoml.lifecycle")  # BentoML's handlers print it with the server's lines


class RefusalsWithoutValues(logging.Filter):
    """BentoML logs a traceback for every request its typed endpoints refuse (400), with the
    refused values in it: one short line naming at most five fields instead, so a hostile client
    cannot fill the log and no value it sent (a sensitive one included) reaches it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            fields = sorted({".".join(str(part)[:64] for part in e["loc"][:3]) for e in exc.errors()})
            path = str(record.args[0])[:128] if record.args else "?"
            record.msg, record.args = (
                "Refused %s: %d validation errors (%s)",
                (path, exc.error_count(), ", ".join(fields[:5])),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(RefusalsWithoutValues())

MAX_ROWS = int(os.environ.get("LIFECYCLE_MAX_ROWS", "1000"))
MAX_REQUEST_BYTES = int(os.environ.get("LIFECYCLE_MAX_REQUEST_BYTES", str(4 * 1024 * 1024)))
MAX_FILE_BYTES = int(os.environ.get("LIFECYCLE_MAX_FILE_BYTES", str(256 * 1024 * 1024)))
MAX_FILE_ROWS = int(os.environ.get("LIFECYCLE_MAX_FILE_ROWS", "2000000"))
FILE_LIMITS = TableLimits(rows=MAX_FILE_ROWS, bytes=MAX_FILE_BYTES)  # a bulk file's, on decompressed data
# /v1/score_file: the Content-Type names the format (the bytes never do); no Content-Encoding is taken
FILE_FORMATS = {b"text/csv": "csv", b"application/vnd.apache.parquet": "parquet", b"application/x-parquet": "parquet"}
# the whole request body must arrive within this many seconds of the first read (else 408)
BODY_TIMEOUT_SECONDS = float(os.environ.get("LIFECYCLE_BODY_TIMEOUT_SECONDS", "30"))
# bulk files a worker reads and scores at once (more wait, unread): its memory holds that many files
BULK_SLOTS = int(os.environ.get("LIFECYCLE_BULK_SLOTS", "1"))
BATCH_MAX_SIZE = int(os.environ.get("LIFECYCLE_BATCH_MAX_SIZE", "64"))
BATCH_MAX_LATENCY_MS = int(os.environ.get("LIFECYCLE_BATCH_MAX_LATENCY_MS", "1000"))
# /predict_batched is for small calls merged by BentoML: at most one batch's worth of records a call
# (a bigger one is split over many model calls and may outlive the batching deadline)
BATCH_MAX_ROWS = min(MAX_ROWS, int(os.environ.get("LIFECYCLE_BATCH_MAX_ROWS", str(BATCH_MAX_SIZE))))
API_KEY = os.environ.get("LIFECYCLE_API_KEY") or None  # set: every path but the probes needs it
PUBLIC_METRICS = os.environ.get("LIFECYCLE_PUBLIC_METRICS", "false").lower() == "true"  # /metrics, docs open
PROBES = frozenset({"/readyz", "/livez", "/healthz"})
# POST /predict answered by the guard (no BentoML IO descriptors, middleware or thread hop); false: by BentoML
FAST_PATH = os.environ.get("LIFECYCLE_FAST_PATH", "true").lower() == "true"
# answered rows a worker holds in memory while its log's disk fails (past it they are counted as dropped)
LOG_MAX_PENDING_ROWS = int(os.environ.get("LIFECYCLE_LOG_MAX_PENDING_ROWS", "100000"))
ENCODE = row_encoder(SPEC)
LIVE: dict[str, TabularService] = {}  # the one service instance of this worker process, once it is ready
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
DATA_VERSION = str(BUNDLE["data_version"])
LOGGED_COLUMNS = [
    c for c in (SPEC.id_column, *SPEC.columns) if c and not (c in SPEC.columns and SPEC.columns[c].sensitive)
]
# categories, labels and the per-request constants as codes: the log writes them as dictionaries
CODED = {name: category_enum(SPEC, name) for name in SPEC.categorical_features}
# the log's rows end with the answer: the task's score column, then its answer columns
LOG_SCHEMA = (
    {name: CODED.get(name, dtype) for name, dtype in records_frame([], SPEC).schema.items() if name in LOGGED_COLUMNS}
    | {
        PREDICTION_ID: pl.String,
        "request_id": pl.Categorical,
        "logged_at": pl.Float64,
        "model_version": pl.Categorical,
        "data_version": pl.Categorical,
        "endpoint": pl.Categorical,
    }
    | TASK.answer_schema(DECISION)
)

PREDICTIONS = bentoml.metrics.Counter(
    name="lifecycle_predictions", documentation="Predictions served", labelnames=["label", "model_version", "endpoint"]
)
FEEDBACK = bentoml.metrics.Counter(name="lifecycle_feedback_labels", documentation="Labels stored via /feedback")
REJECTED = bentoml.metrics.Counter(
    name="lifecycle_rejected_rows", documentation="Rows of bulk files that failed validation", labelnames=["check"]
)
REFUSED = bentoml.metrics.Counter(
    name="lifecycle_refused_requests",
    documentation="Requests answered by the guard: unknown path, no key, too big or slow, media type, a JSON key twice",
    labelnames=["status"],
)
FAST_ANSWERS = bentoml.metrics.Counter(
    name="lifecycle_fast_path_requests",
    documentation="POST /predict answered by the fast path (not in BentoML's request metrics), by status",
    labelnames=["status"],
)
LATENCY = bentoml.metrics.Histogram(
    name="lifecycle_model_seconds",
    documentation="Time in the model per call (features are computed before)",
    labelnames=["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)

REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="lifecycle_request_seconds",
    documentation="Scoring requests, from the whole body read to the answer returned (the KPI flow's p95)",
    labelnames=["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0),
)
TIMED_PATHS = frozenset({"/predict", "/predict_batched", "/v1/score_file"})
LOG_ERRORS = bentoml.metrics.Counter(
    name="lifecycle_log_write_errors",
    documentation="Failed attempts to write the prediction log (each retried), by step",
    labelnames=["step"],
)
LOG_DROPPED = bentoml.metrics.Counter(
    name="lifecycle_log_dropped_rows",
    documentation="Answered rows the prediction log could not keep (its disk failed, its memory bound was reached)",
)
LOG_PENDING = bentoml.metrics.Gauge(
    name="lifecycle_log_pending_rows",
    documentation="Answered rows waiting in memory for the prediction log's disk",
    multiprocess_mode="livesum",
)


class LogMetrics(LogEvents):
    """The prediction log's failures, drops and waiting rows on /metrics."""

    def failed(self, step: str) -> None:
        LOG_ERRORS.labels(step=step).inc()

    def dropped(self, rows: int) -> None:
        LOG_DROPPED.inc(rows)

    def pending(self, rows: int) -> None:
        LOG_PENDING.set(rows)


# one row's answer: its id, the task's answer fields (binary: probability, label; regression: prediction
# and, when the model has one, interval {low, high}), the model version
Prediction = create_model(
    "Prediction", prediction_id=(str, ...), **TASK.answer_fields(DECISION), model_version=(str, ...)
)


class Predictions(BaseModel):
    request_id: str
    model_version: str
    predictions: list[Prediction]


class FeedbackReceipt(BaseModel):
    request_id: str
    stored: int


class Contribution(BaseModel):
    feature: str
    contribution: float  # in the booster's raw units: log-odds for a probability, the target's units for a value


Explanation = create_model(
    "Explanation", **TASK.answer_fields(DECISION), base_value=(float, ...), top=(list[Contribution], ...)
)


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # and the task's decision, as the model's JSON has it

    dataset: str
    task: str
    model_name: str
    model_version: str
    data_version: str
    features: list[str]
    max_rows: int
    predictor: str  # "compiled (lleaves <version>, <cpu>)" or "booster"


class RequestGuard:
    """The outermost ASGI layer (outside BentoML's own middleware, see `GuardedService`): it answers
    what must never reach the service with a clear 4xx, before BentoML labels a metric with the path:
    a path the service does not have (404), a missing or wrong API key when one is set (401), a body
    over the size limit (413, counted on the bytes read, not the declared length), a media type or a
    content encoding the endpoint does not take (415), a body that has not all arrived within
    `LIFECYCLE_BODY_TIMEOUT_SECONDS` (408), a JSON body with a key twice in one object (400). It gives
    every request a valid `x-request-id` (the client's if it is one, else a generated one), seen by the
    endpoints and sent back on every answer."""

    def __init__(self, app, api_paths: frozenset[str], json_paths: frozenset[str]):
        self.app, self.api_paths, self.json_paths = app, api_paths, json_paths
        self.static_files = static_files(app)

    def _is_open(self, path: str) -> bool:
        return path in PROBES or (PUBLIC_METRICS and path not in self.api_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the service has none; BentoML's metrics would label the path
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if not self._answers(scope):
            return await _refuse(send, 404, "no such path")  # the path itself is not echoed
        headers = dict(scope.get("headers") or [])
        if API_KEY and not self._is_open(path) and not _has_key(headers):
            return await _refuse(send, 401, "an API key is needed (Authorization: Bearer … or x-api-key)")
        limit = MAX_FILE_BYTES if path.startswith("/v1/") else MAX_REQUEST_BYTES
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _refuse(send, 413, f"request body over the {limit}-byte limit (or no valid length)")
        is_json = scope.get("method") == "POST" and path in self.json_paths
        if is_json:
            media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
            if media != b"application/json":
                return await _refuse(send, 415, f"{path} takes application/json, not {media.decode(errors='replace')}")
        elif scope.get("method") == "POST" and path == "/v1/score_file" and (refusal := _file_refusal(headers)):
            return await _refuse(send, 415, refusal)
        try:
            body = await _read_body(receive, limit)
        except TimeoutError:
            return await _refuse(send, 408, f"the request body did not all arrive within {BODY_TIMEOUT_SECONDS:g} s")
        if body is None:  # the client went away while sending
            return None
        if len(body) > limit:  # a chunked body (no length) over the limit: refused before anyone parses it
            return await _refuse(send, 413, f"request body over the {limit}-byte limit")
        if is_json and (twice := duplicate_key(body)) is not None:
            return await _refuse(send, 400, f"the key {twice!r} is given twice in one JSON object: give each key once")
        rid = request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        started = time.perf_counter()
        try:
            if FAST_PATH and path == "/predict" and scope.get("method") == "POST" and "service" in LIVE:
                return await _fast_predict(LIVE["service"], body, rid, send)
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k != b"x-request-id"])
            scope["headers"].append((b"x-request-id", rid.encode()))
            return await self.app(scope, _replay(body, receive), _with_request_id(send, rid.encode()))
        finally:
            if path in TIMED_PATHS:
                REQUEST_SECONDS.labels(endpoint=path).observe(time.perf_counter() - started)

    def _answers(self, scope) -> bool:
        """Whether one of the app's routes takes this path (any method: a wrong one gets BentoML's 405);
        under a static folder, only its files."""
        for route in self.app.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                static = isinstance(route, Mount) and isinstance(route.app, StaticFiles)
                return not static or scope["path"] in self.static_files
        return False


def request_id(value: str | None) -> str:
    """The one rule for request ids on every endpoint: the client's `x-request-id` if it is 1–128
    characters of `[A-Za-z0-9._:-]`, else a generated one (never echoed or logged unvalidated)."""
    return value if value and REQUEST_ID.fullmatch(value) else uuid.uuid4().hex


def _has_key(headers: dict[bytes, bytes]) -> bool:
    given = headers.get(b"x-api-key", b"")
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        given = auth[7:].strip()
    return hmac.compare_digest(given, API_KEY.encode())


def _file_refusal(headers: dict[bytes, bytes]) -> str | None:
    """Why `/v1/score_file` does not take this body's declared form, if it does not: its format must
    be named by the Content-Type, and it comes uncompressed (Parquet compresses its own pages)."""
    accepted = " or ".join(m.decode() for m in FILE_FORMATS)
    encoding = headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding != b"identity":
        return f"/v1/score_file takes an uncompressed body, not Content-Encoding {encoding.decode(errors='replace')!r}"
    media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if media not in FILE_FORMATS:
        given = repr(media.decode(errors="replace")[:100]) if media else "none"
        return f"/v1/score_file takes Content-Type {accepted}, not {given}"
    return None


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body, or the first bytes past `limit` (then the rest is never read); None if the
    client disconnected; `TimeoutError` when it has not all arrived within `BODY_TIMEOUT_SECONDS`."""
    chunks, size = [], 0
    async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > limit or not message.get("more_body", False):
                return b"".join(chunks)


class _KeyTwice(Exception):
    def __init__(self, key: str):
        self.key = key


def _once(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        raise _KeyTwice(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return found


def duplicate_key(body: bytes) -> str | None:
    """The first key given twice in one object of a JSON body (parsers keep the last silently); None
    when there is none, or when the body is not JSON (the endpoint's own 400 says so)."""
    try:
        json.loads(body, object_pairs_hook=_once)
    except _KeyTwice as twice:
        return twice.key[:100]
    except (ValueError, RecursionError):
        return None
    return None


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()  # after the body: wait for the disconnect, as the server would
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _with_request_id(send, rid: bytes):
    async def sending(message):
        if message["type"] == "http.response.start" and not any(
            k.lower() == b"x-request-id" for k, _ in message.get("headers", [])
        ):
            message = dict(message, headers=[*message.get("headers", []), (b"x-request-id", rid)])
        await send(message)

    return sending


async def _fast_predict(service: TabularService, body: bytes, rid: str, send) -> None:
    """`POST /predict` without BentoML's per-call machinery: the typed endpoint's own request model
    (the same 400s, naming every field), `TabularService.answer`, one orjson write."""
    try:
        records = PREDICT_INPUT.model_validate_json(body).records
    except ValidationError as exc:
        detail = exc.errors(include_context=False, include_input=False)
        status, answer = 400, {"error": f"{exc.error_count()} validation error for {exc.title}", "detail": detail}
    else:
        try:
            status, answer = 200, service.answer([r.model_dump() for r in records], rid, "predict")
        except Exception:
            logger.exception("/predict failed (request %s)", rid)
            status, answer = 500, {"error": "An unexpected error has occurred, please check the server log."}
    payload = orjson.dumps(answer)
    FAST_ANSWERS.labels(status=str(status)).inc()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _refuse(send, status: int, message: str) -> None:
    REFUSED.labels(status=str(status)).inc()
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 408:  # the rest of the body may still trickle in: the connection ends with the answer
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def static_files(app) -> frozenset[str]:
    """The paths of the files in the static folders mounted on `app` (BentoML's docs page assets)."""
    paths: set[str] = set()
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            for folder in route.app.all_directories:
                paths |= {f"{route.path}/{f.relative_to(folder).as_posix()}" for f in Path(folder).rglob("*")}
    return frozenset(paths)


class AnsweredTimeout(traffic.TimeoutMiddleware):
    """BentoML's request timeout, with its timer cancelled once the request is over. BentoML's own
    leaves one `loop.call_later` timer a request for the whole timeout, and the timer holds the
    request's context (its tracing spans and everything they reference): measured here, a typed
    endpoint at ~1,600 req/s and our 120 s timeout grew a worker by ~60 MB every 15 s until the
    first timers fired. Installed in place of BentoML's (which imports it when it builds the app)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send))
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                body = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(body, status_code=504)(scope, receive, send)
        else:
            await task
        finally:
            timer.cancel()


traffic.TimeoutMiddleware = AnsweredTimeout


class GuardedService(bentoml.Service):
    """BentoML's service with `RequestGuard` outside everything BentoML adds: a middleware added with
    `add_asgi_middleware` runs inside BentoML's metrics middleware, which has already made the
    requested path a label by then (one new series per unknown path, unbounded)."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):
        app = super().to_asgi(is_main)
        api_paths = frozenset({m.route for m in self.apis.values()} | {"/v1/score_file"})
        json_paths = frozenset(m.route for m in self.apis.values())
        return RequestGuard(app, api_paths, json_paths)


def request_id_of(request: Request) -> str:
    """The request's id for every endpoint (`RequestGuard` has already put a valid one in place)."""
    return request_id(request.headers.get("x-request-id"))


def _prediction_ids(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def _epoch(when: datetime) -> float:
    """Naive times are UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


bulk = FastAPI(title="bulk scoring")


Records = Annotated[list[Record], Field(min_length=1, max_length=MAX_ROWS)]
Labels = Annotated[list[Label], Field(min_length=1, max_length=MAX_ROWS)]
BatchedRecords = Annotated[list[Record], Field(min_length=1, max_length=BATCH_MAX_ROWS)]


def api(**options):
    """`bentoml.api` with a request model that rejects unknown top-level fields (400 naming them);
    BentoML's generated one ignores them."""

    def wrap(func):
        generated = bentoml.IODescriptor.from_input(func, skip_self=True, skip_names=("ctx",))
        strict = type(
            f"{func.__name__.title().replace('_', '')}Input",
            (generated,),
            {"model_config": ConfigDict(extra="forbid"), "__module__": __name__},
        )
        return bentoml.api(func, input_spec=strict, **options)

    return wrap


# The container image: a configured base image (e.g. one built offline from Debian packages)
# or BentoML's default; packages pinned by the package phase from the project's lock.
IMAGE = bentoml.images.Image(
    **({"base_image": BUNDLE["base_image"], "distro": "custom"} if BUNDLE.get("base_image") else {}),
    python_version="3.11",
    lock_python_packages=False,
).python_packages(*BUNDLE["packages"])


@bentoml.asgi_app(bulk, path="/v1")
@bentoml.service(
    service_class=GuardedService,
    name=f"{SPEC.name.lower()}-service",
    image=IMAGE,
    workers=int(os.environ.get("LIFECYCLE_WORKERS", "1")),
    traffic={"timeout": 120},
    # per-request access lines cost more than the model; the prediction log and /metrics cover it
    logging={"access": {"enabled": os.environ.get("LIFECYCLE_ACCESS_LOG", "false").lower() == "true"}},
    labels={"dataset": SPEC.name, "model_version": MODEL_VERSION},
)
class TabularService:
    bento_model = bentoml.models.BentoModel(BUNDLE["model_tag"])

    def __init__(self) -> None:
        stored = self.bento_model  # resolved by BentoML to the stored model on the instance
        # the stored files must be the registered ones (bundle.json's hash) before anything reads them
        check_model_files(
            Path(stored.path_of("mlflow_model")), BUNDLE["model_sha256"], BUNDLE["model_files"], str(stored.tag)
        )
        # the model's own plain files (what its MLflow code would read): no MLflow, nothing unpickled
        model_folder = Path(stored.path_of("mlflow_model")) / "artifacts" / "model"
        self.model = TabularModel.load(model_folder)
        if self.model.decision != DECISION:  # the answer's fields were built from bundle.json's copy
            raise ModelIntegrityError(f"{model_folder}: the model's decision differs from the bento's bundle.json")
        # the packaged compiled booster (checked against the booster when it was packaged) serves when its
        # files are the recorded ones and this platform runs it; else the booster, loaded on first use
        packaged = BUNDLE.get("compiled") or {"unavailable": "none in this bento"}
        why = packaged.get("unavailable", "")
        if packaged.get("file"):
            try:
                object_file = Path(__file__).with_name("compiled") / "model.o"
                self.model.compiled = load_compiled(model_folder / BOOSTER_FILE, object_file, packaged)
            except CompiledUnavailable as exc:
                why = str(exc)
        self.predictor = self.model.compiled.description if self.model.compiled else "booster"
        if self.model.compiled is None:
            level = logging.WARNING if packaged.get("file") and not switched_off() else logging.INFO
            logger.log(level, "predictor: booster (no compiled model: %s)", why)
        else:
            logger.info("predictor: %s", self.predictor)
        self.model.predict_scores(records_frame([example_record(SPEC)], SPEC))  # warm up before /readyz
        # rolls what a dead worker left in the log first, logging its pid and the rows recovered
        self.log = PredictionLog(
            log_root(), SPEC.name, LOG_SCHEMA, max_pending_rows=LOG_MAX_PENDING_ROWS, events=LogMetrics(), logger=logger
        )
        self.bulk_slots = asyncio.Semaphore(BULK_SLOTS)
        self.label_folder = label_root() / SPEC.name
        logger.info("prediction log: %s; labels: %s", self.log.folder, self.label_folder)
        LIVE["service"] = self

    # -- scoring -------------------------------------------------------------------------
    def _scores(self, matrix: np.ndarray, endpoint: str) -> np.ndarray:
        started = time.perf_counter()
        scores = self.model.predict_matrix(matrix)
        LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - started)
        return scores

    def _log(
        self, records: list[dict], answers: list[dict], prediction_ids: list[str], request_ids: list[str], endpoint: str
    ) -> None:
        """Each record's logged columns and its answer (`TASK.answer_rows`), under its ids."""
        now = time.time()
        self.log.append_rows(
            [
                {c: r.get(c) for c in LOGGED_COLUMNS}
                | {
                    PREDICTION_ID: pid,
                    "request_id": rid,
                    "logged_at": now,
                    "model_version": MODEL_VERSION,
                    "data_version": DATA_VERSION,
                    "endpoint": endpoint,
                }
                | answer
                for r, pid, rid, answer in zip(records, prediction_ids, request_ids, answers, strict=True)
            ]
        )

    def _count(self, scores: np.ndarray, endpoint: str) -> None:
        for label, count in TASK.answer_counts(scores, self.model.decision).items():
            if count:
                PREDICTIONS.labels(label=label, model_version=MODEL_VERSION, endpoint=endpoint).inc(count)

    def answer(self, rows: list[dict], request_id: str, endpoint: str) -> dict:
        """Validated records → the `Predictions` answer (a dict), logged once it exists."""
        predictions = self._predictions(rows, endpoint, request_id)
        return {"request_id": request_id, "model_version": MODEL_VERSION, "predictions": predictions}

    def _predictions(self, rows: list[dict], endpoint: str, request_id: str | None) -> list[dict]:
        """Each record's `Prediction` (a dict), logged under `request_id` (None: its prediction id).
        Features by the row encoder: no frame is built for a few records."""
        scores = self._scores(np.array([ENCODE(r) for r in rows], dtype=np.float64), endpoint)
        answers = TASK.answer_rows(scores, self.model.decision)
        ids = _prediction_ids(len(rows))
        predictions = [
            {"prediction_id": i, **answer, "model_version": MODEL_VERSION}
            for i, answer in zip(ids, TASK.answer_json(answers, self.model.decision), strict=True)
        ]
        self._log(rows, answers, ids, ids if request_id is None else [request_id] * len(rows), endpoint)
        self._count(scores, endpoint)
        return predictions

    @api()
    async def predict(self, records: Records, ctx: bentoml.Context) -> Predictions:
        """Score one or many records: the task's answer (a probability and the label at the model's
        threshold; a predicted value and its interval), the model version.
        (Served by `RequestGuard`'s fast path unless `LIFECYCLE_FAST_PATH=false`; the same answer.)"""
        request_id = request_id_of(ctx.request)
        ctx.response.headers["x-request-id"] = request_id
        return Predictions.model_validate(self.answer([r.model_dump() for r in records], request_id, "predict"))

    @api(batchable=True, max_batch_size=BATCH_MAX_SIZE, max_latency_ms=BATCH_MAX_LATENCY_MS)
    async def predict_batched(self, records: BatchedRecords) -> list[Prediction]:
        """Like `predict`, but concurrent requests are merged into one model call (adaptive batching);
        at most `LIFECYCLE_BATCH_MAX_ROWS` records a call."""
        return self._predictions([r.model_dump() for r in records], "predict_batched", None)

    @api()
    async def feedback(self, labels: Labels, ctx: bentoml.Context) -> FeedbackReceipt:
        """The truth about earlier predictions, keyed by their `prediction_id` (or the config's id
        column): stored in the label store, joined to the prediction log by monitoring and retraining."""
        request_id = request_id_of(ctx.request)
        now = time.time()
        rows = [
            {
                PREDICTION_ID: item.prediction_id,
                "id": getattr(item, SPEC.id_column) if SPEC.id_column else None,
                "label": text_form(item.label),  # stored as text: a number as its text, read back by its type
                "observed_at": _epoch(item.observed_at) if item.observed_at else None,
                "received_at": now,
                "source": "feedback",
            }
            for item in labels
        ]
        frame = pl.DataFrame(rows, schema=LABEL_SCHEMA, orient="row")
        await asyncio.to_thread(write_part, self.label_folder, frame)  # stored before we answer
        FEEDBACK.inc(len(rows))
        ctx.response.headers["x-request-id"] = request_id
        return FeedbackReceipt(request_id=request_id, stored=len(rows))

    @api()
    def explain(self, records: Records, top_k: Annotated[int, Field(ge=1, le=50)] = 5) -> list[Explanation]:
        """Each record's answer and its largest feature contributions (LightGBM `pred_contrib`: log-odds
        for a probability, the target's units for a predicted value)."""
        frame = records_frame([r.model_dump() for r in records], SPEC)
        matrix = self.model.matrix(frame)
        scores = self._scores(matrix, "explain")
        answers = TASK.answer_json(TASK.answer_rows(scores, self.model.decision), self.model.decision)
        contrib = self.model.booster.predict(matrix, pred_contrib=True)
        names = SPEC.feature_names
        out = []
        for row, answer in zip(contrib, answers, strict=True):
            order = np.argsort(-np.abs(row[:-1]))[:top_k]
            top = [Contribution(feature=names[i], contribution=float(row[i])) for i in order]
            out.append(Explanation(**answer, base_value=float(row[-1]), top=top))
        return out

    @bulk.post("/score_file")
    async def score_file(self, request: Request) -> Response:
        """Bulk scoring: POST a Parquet or CSV body (`Content-Type` application/vnd.apache.parquet or
        text/csv, uncompressed); get Parquet back with `prediction_id`, the task's answer columns
        (`probability`, `label`; `prediction`, `interval_low`, `interval_high`) and, for rows that fail
        validation, `reason` (those rows are not scored)."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = FILE_FORMATS[media.encode()]  # `RequestGuard` has refused any other (415)
        async with self.bulk_slots:
            body = await request.body()
            if len(body) > MAX_FILE_BYTES:
                return JSONResponse({"error": f"file is over the {MAX_FILE_BYTES}-byte limit"}, status_code=413)
            # reading, scoring and writing the answer all run off the event loop: other requests go on
            status, answer, headers = await asyncio.to_thread(self._score_file, body, fmt, request_id_of(request))
        if status != 200:
            return JSONResponse(answer, status_code=status)
        return Response(answer, media_type="application/vnd.apache.parquet", headers=headers)

    def _score_file(self, body: bytes, fmt: str, request_id: str) -> tuple[int, bytes | dict, dict[str, str]]:
        """(status, the Parquet answer or the error, headers) of one bulk file."""
        read = [*SPEC.base_features, *([SPEC.id_column] if SPEC.id_column else [])]
        try:  # the file rules of prepare; rows and decompressed bytes counted before the data is parsed
            raw = read_table(body, "the request body", SPEC.base_features, fmt, columns=read, limits=FILE_LIMITS)
        except TableTooLarge as exc:
            return 413, {"error": str(exc)}, {}
        except DataError as exc:
            return 400, {"error": str(exc)}, {}
        if raw.height > MAX_FILE_ROWS:
            return 413, {"error": f"{raw.height} rows is over the {MAX_FILE_ROWS}-row limit"}, {}
        missing = [c for c in SPEC.base_features if c not in raw.columns]
        if missing or raw.height == 0:
            return 400, {"error": f"no rows, or missing columns: {missing}"}, {}
        result, scored, logged = self._score_table(raw, request_id)
        out = io.BytesIO()
        result.write_parquet(out, **SERVED_PARQUET)
        if logged is not None:  # once the answer exists
            self.log.append_frame(logged)
            self._count(logged.get_column(TASK.score_column).to_numpy(), "score_file")
        counts = {"x-rows-scored": str(scored), "x-rows-rejected": str(raw.height - scored)}
        return 200, out.getvalue(), {"x-request-id": request_id, **counts}

    def _score_table(self, raw: pl.DataFrame, request_id: str) -> tuple[pl.DataFrame, int, pl.DataFrame | None]:
        """The answer, the number of rows scored and the log rows for them (None if none)."""
        keep = [c for c in (SPEC.id_column,) if c and c in raw.columns]
        fast = typed_and_encoded(raw, SPEC)  # every row valid: cast, checks and features in one pass
        if fast is None:  # some row is not: one cast for the checks (with reasons) and the scoring
            (typed, failures), matrix = typed_with_failures(raw, SPEC, SPEC.base_features), None
        else:
            (typed, matrix), failures = fast, pl.DataFrame(schema=FAILURE_SCHEMA)
        reason = pl.format("{}: {} (value={})", "column", "check", pl.col("value").fill_null("null"))
        reasons = failures.group_by("row", maintain_order=True).agg(reason.first().alias("reason"))
        for check, count in failures.group_by("check").len().iter_rows():
            REJECTED.labels(check=check).inc(count)
        accepted = np.ones(raw.height, dtype=bool)
        accepted[reasons.get_column("row").to_numpy()] = False
        good = typed.hstack(raw.select(keep))
        if reasons.height:
            good = good.filter(pl.Series(accepted))
        scores = np.full(raw.height, np.nan)
        if good.height:
            scores[accepted] = self._scores(self.model.matrix(good) if matrix is None else matrix, "score_file")
        answers = list(self.model.answer_columns(scores).values())  # null where not scored
        everything = good.height == raw.height
        ids = new_prediction_ids(good.height)
        logged = None
        if good.height:
            logged = good.with_columns(
                ids,
                pl.lit(request_id, dtype=pl.Categorical).alias("request_id"),
                pl.lit(time.time()).alias("logged_at"),
                pl.lit(MODEL_VERSION, dtype=pl.Categorical).alias("model_version"),
                pl.lit(DATA_VERSION, dtype=pl.Categorical).alias("data_version"),
                pl.lit("score_file", dtype=pl.Categorical).alias("endpoint"),
                pl.Series(TASK.score_column, scores[accepted], dtype=pl.Float64),
                *(answers if everything else [column.filter(pl.Series(accepted)) for column in answers]),
            )
            logged = logged.select([c for c in LOG_SCHEMA if c in logged.columns])
        if everything:
            scored_ids, why = ids, pl.lit(None, dtype=pl.String).alias("reason")
        else:
            nothing = pl.repeat(None, raw.height, dtype=pl.String, eager=True)
            scored_ids = nothing.alias(PREDICTION_ID).scatter(np.flatnonzero(accepted), ids)
            why = nothing.alias("reason").scatter(reasons.get_column("row"), reasons.get_column("reason"))
        result = raw.select(
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
            *keep,
            scored_ids,
            pl.Series(TASK.score_column, scores).fill_nan(None),
            *as_text(pl.DataFrame(answers)).get_columns(),  # a label as plain text
            why,
            pl.lit(MODEL_VERSION).alias("model_version"),
        )
        return result, good.height, logged

    @api()
    def model_info(self) -> ModelInfo:
        """Which model answers: name, task, registry version, data version, features, the predictor and
        the task's decision (binary: `threshold`; regression: `interval` {halfwidth, coverage})."""
        return ModelInfo(
            dataset=SPEC.name,
            task=TASK.kind,
            model_name=BUNDLE["model_name"],
            model_version=MODEL_VERSION,
            data_version=BUNDLE["data_version"],
            features=SPEC.feature_names,
            max_rows=MAX_ROWS,
            predictor=self.predictor,
            **TASK.decision_json(self.model.decision),
        )

    async def __is_ready__(self) -> bool:
        """/readyz: 503 while the prediction log cannot write (answers go on; rows wait in memory)."""
        return self.log.healthy()

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        """Rolls this worker's segment into a part and releases it."""
        self.log.close()


PREDICT_INPUT = TabularService.apis["predict"].input_spec  # the typed endpoint's request model, for the fast path
