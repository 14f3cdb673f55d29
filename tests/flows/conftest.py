"""Flow tests run against a real (temporary) Prefect API with an isolated results folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_api):
    return prefect_api


@pytest.fixture
def cli_env(prefect_api):
    """Environment for a subprocess that talks to the test API and its results folder."""
    return os.environ | {
        "PREFECT_API_URL": prefect_api["api_url"],
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_api["results"]),
    }
