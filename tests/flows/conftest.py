"""Flow tests run against a real (temporary) Prefect API with an isolated results folder."""

from __future__ import annotations

import os

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api(tmp_path_factory):
    results = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(results)}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield {"api_url": PREFECT_API_URL.value(), "results": results}


@pytest.fixture
def cli_env(prefect_api):
    """Environment for a subprocess that talks to the test API and its results folder."""
    return os.environ | {
        "PREFECT_API_URL": prefect_api["api_url"],
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_api["results"]),
    }
