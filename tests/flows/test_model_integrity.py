"""The registered and served model: plain files only (nothing pickled), checked against the content
hash recorded at registration before anything loads them; sensitive columns are never kept."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import bentoml
import httpx
import mlflow
import polars as pl
import pytest

from flows.prepare import prepare
from tasks.core.errors import ModelIntegrityError
from tasks.core.integrity import manifest_digest, model_manifest
from tasks.core.spec import load_spec
from tasks.stores import registry
from tasks.stores.backends import free_port
from tasks.stores.bento_server import serve_command
from tests.conftest import FIXTURES
from tests.serving.server import BENTOML

PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".cloudpickle", ".pt", ".pth"}
PICKLE_HEADER = re.compile(rb"^\x80[\x02-\x05]")


def _pickled(folder: Path) -> list[str]:
    """Files that are pickles by name or by content (a pickle protocol 2–5 header)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            head = f.read(2)
        if path.suffix in PICKLE_SUFFIXES or PICKLE_HEADER.match(head):
            found.append(str(path.relative_to(folder)))
    return found


@pytest.fixture(scope="module")
def trained(orders_lifecycle):
    result, workdir = orders_lifecycle
    spec = load_spec(FIXTURES / "orders.yaml")
    cfg = registry.default_tracking(workdir, spec.name, spec.registered_model_name)
    return result, cfg


def test_neither_the_registered_nor_the_stored_model_holds_a_pickle(trained, tmp_path):
    result, cfg = trained
    local = registry.download_model(cfg, f"models:/{cfg.model_name}@champion", tmp_path)
    stored = Path(bentoml.models.get(result.package.bento_model_tag).path)
    bento = Path(bentoml.get(result.package.bento_tag).path)
    assert (local / "artifacts" / "model" / "booster.txt").is_file() and (stored / "mlflow_model" / "MLmodel").is_file()
    assert _pickled(local) == [] and _pickled(stored) == [] and _pickled(bento) == []
    # the training run's other artifacts (the baselines: skops files) hold no pickle either
    cfg.activate()
    run_files = Path(mlflow.artifacts.download_artifacts(run_id=result.train.run_id, dst_path=str(tmp_path / "run")))
    assert (run_files / "baselines" / "logistic_regression.skops").is_file()
    assert _pickled(run_files) == []


def test_the_content_hash_is_recorded_at_registration_and_shipped_in_the_bento(trained, tmp_path):
    result, cfg = trained
    champion = registry.version_by_alias(cfg, registry.CHAMPION)
    local = registry.download_model(cfg, f"models:/{cfg.model_name}/{champion.version}", tmp_path)
    manifest = model_manifest(local)
    assert champion.tags[registry.DIGEST_TAG] == manifest_digest(manifest)
    assert json.loads(champion.tags[registry.FILES_TAG]) == manifest
    assert {"MLmodel", "pyfunc_model.py", "artifacts/model/booster.txt", "artifacts/model/model.json"} <= set(manifest)
    assert "code/tasks/core/model.py" in manifest and "code/tasks/core/integrity.py" in manifest
    bundle = json.loads((Path(bentoml.get(result.package.bento_tag).path) / "src" / "bundle.json").read_text())
    assert bundle["model_sha256"] == champion.tags[registry.DIGEST_TAG] and bundle["model_files"] == manifest
    stored = Path(bentoml.models.get(result.package.bento_model_tag).path_of("mlflow_model"))
    assert manifest_digest(model_manifest(stored)) == bundle["model_sha256"]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("artifacts/model/booster.txt", "changed: ['artifacts/model/booster.txt']"),
        ("artifacts/model/model.json", "changed: ['artifacts/model/model.json']"),
        ("code/tasks/core/features.py", "changed: ['code/tasks/core/features.py']"),
        ("pyfunc_model.py", "changed: ['pyfunc_model.py']"),
    ],
)
def test_a_tampered_registry_model_is_refused_before_its_code_runs(trained, tmp_path, monkeypatch, path, named):
    """The downloaded copy is tampered (the registry's own files stay intact for other tests)."""
    _, cfg = trained
    download = registry.download_model
    marker = tmp_path / "the-model-code-ran"

    def tampered(cfg_, uri, folder):
        local = download(cfg_, uri, folder)
        target = local / path
        body = bytearray(target.read_bytes())
        if target.suffix == ".py":  # tampered code that would leave a trace if it ran
            body += f"\nopen({str(marker)!r}, 'w').close()\n".encode()
        else:
            body[len(body) // 2] ^= 0x01  # one byte
        target.write_bytes(bytes(body))
        return local

    monkeypatch.setattr(registry, "download_model", tampered)
    with pytest.raises(ModelIntegrityError, match=rf"{cfg.model_name} v\d+ .*do not match the recorded") as err:
        registry.load_model(cfg, f"models:/{cfg.model_name}@champion")
    assert named in str(err.value)
    assert not marker.exists()


def test_a_model_with_no_recorded_hash_is_refused(trained, monkeypatch):
    _, cfg = trained
    pinned, _, files, label = registry.recorded_hash(cfg, f"models:/{cfg.model_name}@champion")
    monkeypatch.setattr(registry, "recorded_hash", lambda cfg_, uri: (pinned, None, files, label))
    with pytest.raises(ModelIntegrityError, match="no content hash recorded"):
        registry.load_model(cfg, f"models:/{cfg.model_name}@champion")


def test_a_bento_whose_model_was_tampered_does_not_start(trained, tmp_path):
    """A copy of the bento in a BentoML home of its own, one byte of its booster changed: the
    service refuses to load it."""
    result, _ = trained
    home = tmp_path / "home"
    exported = tmp_path / "copy.bento"
    out = subprocess.run([BENTOML, "export", result.package.bento_tag, str(exported)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    env = os.environ | {"BENTOML_HOME": str(home)}
    out = subprocess.run([BENTOML, "import", str(exported)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    boosters = list(home.rglob("mlflow_model/artifacts/model/booster.txt"))
    assert boosters
    for booster in boosters:
        body = bytearray(booster.read_bytes())
        body[len(body) // 2] ^= 0x01
        booster.write_bytes(bytes(body))
    log = tmp_path / "serve.log"
    port = free_port()
    cmd = serve_command(result.package.bento_tag, "127.0.0.1", port)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # outside a container BentoML respawns a worker that fails to start, so the server may keep
        # running: it must never answer /readyz, and its log must name the model and the file
        deadline = time.monotonic() + 300
        while proc.poll() is None and "ModelIntegrityError" not in log.read_text() and time.monotonic() < deadline:
            assert not _ready(port), "a tampered bento answered /readyz"
            time.sleep(1)
        assert not _ready(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text()
    assert "ModelIntegrityError" in text and result.package.bento_model_tag in text, text[-3000:]
    assert "changed: ['artifacts/model/booster.txt']" in text, text[-3000:]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_sensitive_values_reach_no_snapshot_quarantine_report_or_cache(prefect_api, tmp_path):
    """A copy of the orders table whose sensitive notes are unmistakable, some rows invalid."""
    raw = pl.read_csv(FIXTURES / "orders.csv", infer_schema=False)
    secret = pl.format("SECRET-NOTE-{}", pl.int_range(pl.len()))
    bad = pl.int_range(pl.len()) % 40 == 7  # quarantined: their note must not be kept either
    raw = raw.with_columns(
        secret.alias("note"), pl.when(bad).then(pl.lit("-5")).otherwise(pl.col("amount_eur")).alias("amount_eur")
    )
    config, streamed = tmp_path / "orders.yaml", tmp_path / "orders-streamed.yaml"
    shutil.copy(FIXTURES / "orders.yaml", config)
    streamed.write_text(config.read_text().replace("strategy: time", "strategy: random"))  # time is not streamed
    raw.write_csv(tmp_path / "orders.csv")
    for stream_rows in (None, 50):
        path = streamed if stream_rows else config
        result = prepare(config=path, workdir=tmp_path / f"wd-{stream_rows}", stream_rows=stream_rows)
        assert result.rows_quarantined == raw.filter(bad).height > 0
    assert _holding(tmp_path, "SECRET-NOTE") == []
    assert _holding(Path(prefect_api["results"]), "SECRET-NOTE") == []  # Prefect's persisted task results


def _holding(folder: Path, needle: str) -> list[str]:
    """Files under `folder` (but the source) that hold `needle` or a `note` column."""
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "orders.csv"):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            text = str(frame.to_dicts())
            if "note" in frame.columns or needle in text:
                hits.append(str(path))
        elif needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


def test_sensitive_values_reach_nothing_the_lifecycle_writes(orders_lifecycle):
    """Snapshots, quarantine, MLflow runs and models, evaluation reports, the bento: no note."""
    result, workdir = orders_lifecycle
    assert _holding(workdir, "call first") == []  # a note of the orders fixture
    assert _holding(Path(bentoml.get(result.package.bento_tag).path), "call first") == []
