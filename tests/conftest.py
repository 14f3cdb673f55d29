"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl
import pytest

from tasks.spec import DatasetSpec, load_spec

# Tests never touch the user's BentoML store (~/bentoml): set before bentoml is imported.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-home-")
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

    results = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(results)}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield {"api_url": PREFECT_API_URL.value(), "results": results}


def _lifecycle(config, workdir):
    from flows.lifecycle import lifecycle

    return lifecycle(config=config, workdir=workdir, n_trials=5)


@pytest.fixture(scope="session")
def telco_lifecycle(prefect_api, tmp_path_factory):
    """The Telco table through the whole lifecycle with a small budget (shared by test layers)."""
    workdir = tmp_path_factory.mktemp("telco-lifecycle")
    return _lifecycle(CONFIGS / "telco_churn.yaml", workdir), workdir


@pytest.fixture(scope="session")
def orders_lifecycle(prefect_api, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("orders-lifecycle")
    return _lifecycle(FIXTURES / "orders.yaml", workdir), workdir
