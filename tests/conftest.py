"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import polars as pl
import pytest
import yaml

from tasks.core.spec import DatasetSpec, load_spec

# Tests never touch the user's BentoML store (~/bentoml): set before bentoml is imported; removed at exit.
_BENTOML_HOME = tempfile.TemporaryDirectory(prefix="bentoml-home-", ignore_cleanup_errors=True)
os.environ["BENTOML_HOME"] = _BENTOML_HOME.name
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def telco_spec() -> DatasetSpec:
    return load_spec(CONFIGS / "telco_churn.yaml")


@pytest.fixture(scope="session")
def credit_spec() -> DatasetSpec:
    return load_spec(CONFIGS / "credit_data.yaml")


@pytest.fixture(scope="session")
def diamonds_spec() -> DatasetSpec:
    """The bundled regression sample's config."""
    return load_spec(CONFIGS / "diamonds.yaml")


@pytest.fixture(scope="session")
def orders_spec() -> DatasetSpec:
    return load_spec(FIXTURES / "orders.yaml")


@pytest.fixture(scope="session")
def telco_raw(telco_spec) -> pl.DataFrame:
    return pl.read_csv(telco_spec.resolve(telco_spec.source.path), infer_schema=False)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real temporary Prefect API for the session, with an isolated results folder."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.cli import EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    results = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(results)}),
        prefect_test_harness(server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT_SECONDS),
    ):
        yield {"api_url": PREFECT_API_URL.value(), "results": results}


def _lifecycle(config, workdir, n_trials: int = 5):
    from flows.lifecycle import lifecycle

    return lifecycle(config=config, workdir=workdir, n_trials=n_trials)


@pytest.fixture(scope="session")
def telco_lifecycle(prefect_api, tmp_path_factory):
    """The Telco table through the whole lifecycle with a small budget (shared by test layers)."""
    workdir = tmp_path_factory.mktemp("telco-lifecycle")
    return _lifecycle(CONFIGS / "telco_churn.yaml", workdir), workdir


DIAMONDS_ROWS = 12_000  # a seeded sample of the 53,940: the test split's interval coverage is measured on 2,400


@pytest.fixture(scope="session")
def diamonds_config(tmp_path_factory) -> Path:
    """The regression sample made quick for a session: a seeded sample of its rows, a short training
    budget (small trees, few rounds: lleaves compiles them in seconds), and a gate this budget passes."""
    folder = tmp_path_factory.mktemp("diamonds-config")
    body = yaml.safe_load((CONFIGS / "diamonds.yaml").read_text())
    table = pl.read_csv(CONFIGS / body["source"]["path"], infer_schema=False)
    table.sample(DIAMONDS_ROWS, seed=0).write_csv(folder / "diamonds.csv")
    body["source"]["path"] = "diamonds.csv"
    body["training"] |= {"max_boost_rounds": 300, "search_space": {
        "learning_rate": {"low": 0.05, "high": 0.3, "log": True},
        "num_leaves": {"low": 8, "high": 32, "log": True, "integer": True},
    }}  # fmt: skip
    body["evaluation"] |= {"bootstrap_rounds": 100, "cv_folds": 2}
    body["gate"] = [{"metric": "r2", "min": 0.9}, {"metric": "rmse", "vs": "mean", "min_gain": 1000}]
    (folder / "diamonds.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return folder / "diamonds.yaml"


@pytest.fixture(scope="session")
def diamonds_lifecycle(prefect_api, diamonds_config, tmp_path_factory):
    """The regression sample through the whole lifecycle (shared by the test layers: one trained,
    registered and packaged regression model a session)."""
    workdir = tmp_path_factory.mktemp("diamonds-lifecycle")
    return _lifecycle(diamonds_config, workdir, n_trials=3), workdir


@pytest.fixture(scope="session")
def orders_lifecycle(prefect_api, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("orders-lifecycle")
    return _lifecycle(FIXTURES / "orders.yaml", workdir), workdir


ENGINE = ROOT / "deployments" / "docker" / "engine.sh"


@pytest.fixture(scope="session")
def docker_engine():
    """A real Docker engine: the one that answers, or one started (and stopped) for the session."""

    def answers(host: str) -> bool:
        return subprocess.run(["docker", "-H", host, "info"], capture_output=True, timeout=30).returncode == 0

    before = os.environ.get("DOCKER_HOST")
    candidates = [before, "unix:///var/lib/lifecycle-docker/docker.sock", "unix:///var/run/docker.sock"]
    already = any(answers(h) for h in candidates if h)
    out = subprocess.run(["bash", str(ENGINE), "start"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    host = out.stdout.strip().splitlines()[-1].removeprefix("export DOCKER_HOST=")
    os.environ["DOCKER_HOST"] = host
    os.environ.setdefault("DOCKER_BUILDKIT", "0")
    started_here = not already and "lifecycle-docker" in host
    yield host
    if started_here and os.environ.get("LIFECYCLE_KEEP_DOCKER") != "1":
        subprocess.run(["bash", str(ENGINE), "stop"], capture_output=True, timeout=120)
    if before is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = before
