"""BentoML: a registry version imported into the local model store, the service built around it
into a bento, and the bento containerized into an image.

The bento is built from a staging folder holding the service (`bentos/tabular/`), the core
package (`tasks/core/`), and `bundle.json` (model tag, versions, spec). Its tag records the model
version and a hash of the serving code, so packaging the same model with the same code again
finds the bento instead of building a new one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from tasks.core.compiled import compile_booster, verified_compiled
from tasks.core.features import feature_matrix
from tasks.core.integrity import check_model_files
from tasks.core.model import BOOSTER_FILE, TabularModel
from tasks.core.records import example_records, records_frame
from tasks.core.spec import DatasetSpec, read_yaml
from tasks.stores.registry import DIGEST, FILES, TrackingConfig, VersionInfo, load_model, recorded_hash
from tasks.stores.shipped import copy_core, core_files
from tasks.stores.workdir import Workdir

PROJECT = Path(__file__).resolve().parents[2]
SERVICE_DIR = PROJECT / "bentos" / "tabular"
MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow keeps the MLflow model inside a stored model
STORED_BOOSTER = Path(MLFLOW_MODEL_FOLDER) / "artifacts" / "model" / BOOSTER_FILE  # the booster in a stored model
COMPILED_OBJECT = Path("compiled") / "model.o"  # the compiled booster in the bento, beside service.py
SERVICE_PACKAGES = (
    "bentoml",
    "mlflow",
    "lightgbm",
    "polars",
    "pandas",
    "numpy",
    "pyarrow",
    "orjson",
    "pydantic",
    "pyyaml",
    "pandera",
    "scikit-learn",
    "lleaves",
    "llvmlite",
)


def bento_name(spec: DatasetSpec) -> str:
    return f"{spec.name.lower()}-service"


def store_name(spec: DatasetSpec) -> str:
    """BentoML model names: lowercase letters, digits, `-`, `_`, `.`."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in spec.registered_model_name.lower())


def code_hash(base_image: str = "") -> str:
    """Hash of everything the bento runs: the service folder, the shared modules, the base image."""
    digest = hashlib.sha256(base_image.encode())
    files = sorted(SERVICE_DIR.glob("*.py")) + [SERVICE_DIR / "bentofile.yaml"]
    files += core_files()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def import_model(cfg: TrackingConfig, spec: DatasetSpec, mv: VersionInfo) -> tuple[str, bool]:
    """Import a registry version into the BentoML store once. Returns (tag, imported now).

    The registry's content hash goes into the BentoML model's metadata (and from there into the
    bento's bundle.json); the stored copy is checked against it."""
    import bentoml
    from bentoml.exceptions import NotFound

    uri = f"models:/{cfg.model_name}/{mv.version}"
    _, expected, recorded, label = recorded_hash(cfg, uri)
    # the run id keeps versions of different registries (workdirs, servers) apart in one store
    tag = f"{store_name(spec)}:v{mv.version}-{(mv.run_id or 'norun')[:8]}"
    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        stored = None
    if stored is not None and stored.info.metadata.get(DIGEST) == expected:
        check_model_files(Path(stored.path_of(MLFLOW_MODEL_FOLDER)), expected, recorded, f"{label} as {tag}")
        return str(stored.tag), False
    if stored is not None:  # imported before content hashes were recorded
        bentoml.models.delete(tag)
    model = load_model(cfg, uri)  # checks the registry's files
    bento_model = bentoml.mlflow.import_model(
        tag,
        uri,
        labels={"dataset": spec.name, "model_version": mv.version, "data_version": model.metadata["data_version"]},
        metadata={
            "registered_model": cfg.model_name,
            "model_version": mv.version,
            "run_id": mv.run_id or "",
            "data_version": model.metadata["data_version"],
            "spec_hash": model.metadata["spec_hash"],
            **model.task.decision_tags(model.decision),
            "spec_json": model.spec.model_dump_json(),
            DIGEST: expected,
            FILES: json.dumps(recorded, sort_keys=True),
        },
    )
    check_model_files(Path(bento_model.path_of(MLFLOW_MODEL_FOLDER)), expected, recorded, f"{label} as {tag}")
    return str(bento_model.tag), True


def build_bento(spec: DatasetSpec, model_tag: str, workdir: Path, base_image: str = "") -> tuple[str, bool]:
    """Build the service around a BentoML model once per (model version, serving code, base image)."""
    import bentoml
    from bentoml.exceptions import NotFound

    stored = bentoml.models.get(model_tag)
    info = stored.info
    files = json.loads(info.metadata[FILES])
    check_model_files(Path(stored.path_of(MLFLOW_MODEL_FOLDER)), info.metadata[DIGEST], files, model_tag)
    tag = f"{bento_name(spec)}:{model_tag.split(':')[1]}-{code_hash(base_image)}"
    try:
        return str(bentoml.get(tag).tag), False
    except NotFound:
        pass
    staging = Workdir(workdir).bento_build(tag)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in SERVICE_DIR.glob("*.py"):
        shutil.copy2(path, staging / path.name)  # the recipe is written below
    copy_core(staging)
    compiled = package_compiled(Path(stored.path), Workdir(workdir).compiled, staging)
    model = TabularModel.load((Path(stored.path) / STORED_BOOSTER).parent)  # its files checked above
    meta = info.metadata
    bundle = {
        "model_tag": model_tag,
        "model_name": meta["registered_model"],
        "model_version": meta["model_version"],
        "data_version": meta["data_version"],
        "spec": json.loads(meta["spec_json"]),
        # the task's decision: it fixes the answer's fields (the service checks the model's against it)
        "decision": model.task.decision_json(model.decision),
        # the service checks the stored model's files against these before loading them
        "model_sha256": meta[DIGEST],
        "model_files": files,
        "base_image": base_image,
        "packages": [f"{p}=={version(p)}" for p in SERVICE_PACKAGES],
        "compiled": compiled,  # the service checks the object file against this before loading it
    }
    (staging / "bundle.json").write_text(json.dumps(bundle, indent=2))
    recipe = read_yaml(SERVICE_DIR / "bentofile.yaml")
    recipe["labels"] = {"dataset": spec.name, "model_version": str(meta["model_version"])}
    recipe["description"] = f"{spec.name} model v{meta['model_version']} (data {meta['data_version']})"
    (staging / "bentofile.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    # A separate process: building imports `service`, and one process must not reuse another
    # dataset's already-imported service module.
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(staging), "--name", bento_name(spec),
         "--version", tag.split(":")[1], "--output", "tag"],
        capture_output=True, text=True, cwd=staging,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"bentoml build failed ({proc.returncode}): {proc.stderr[-3000:]}")
    bento = bentoml.get(tag)
    return str(bento.tag), True


PARITY_ROWS = 2000  # varied records from the spec the packaged object must score as the booster does


def package_compiled(stored_model: Path, cache: Path, staging: Path) -> dict:
    """The stored booster compiled (a cache hit when the gate compiled it) into `staging`, once it
    scores varied records from the spec as the booster does (the gate checked the test split): its
    info for bundle.json, or {"unavailable": why} (then the booster serves). The service checks only
    the files' hashes when it starts, so no worker loads LightGBM just to compare."""
    booster_file = stored_model / STORED_BOOSTER
    model = TabularModel.load(booster_file.parent)
    compiled, reason = compile_booster(model.booster_text, cache)
    if compiled is None:
        return {"unavailable": reason}
    rows = feature_matrix(records_frame(example_records(model.spec, PARITY_ROWS), model.spec), model.spec)
    loaded, reason = verified_compiled(booster_file, cache / compiled["file"], compiled, model.booster, rows)
    if loaded is None:
        return {"unavailable": reason}
    (staging / COMPILED_OBJECT).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cache / compiled["file"], staging / COMPILED_OBJECT)
    return compiled


def base_image() -> str:
    """The base image for service images (see deployments/docker/base-image.sh)."""
    proc = subprocess.run(
        ["bash", str(PROJECT / "deployments" / "docker" / "base-image.sh")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"no base image: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def image_tag(bento_tag: str, repository: str | None = None) -> str:
    repository = repository or os.environ.get("LIFECYCLE_IMAGE_REPOSITORY", "lifecycle")
    name, version_ = bento_tag.split(":")
    return f"{repository}/{name.replace('_', '-')}:{version_}"


def containerize(bento_tag: str, repository: str | None = None) -> tuple[str, bool]:
    """`bentoml containerize` (docker backend, host network) once per bento. (image, built now)"""
    image = image_tag(bento_tag, repository)
    env = os.environ | {"DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, env=env).returncode == 0:
        return image, False
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "containerize", bento_tag, "--backend", "docker",
         "--image-tag", image, "--opt", "network=host"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"bentoml containerize failed: {(proc.stdout + proc.stderr)[-4000:]}")
    return image, True
