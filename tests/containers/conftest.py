"""Container tests: the Telco champion as an image on a real Docker engine."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_api):
    return prefect_api


@pytest.fixture(scope="session")
def telco_image(docker_engine, telco_lifecycle):
    """The Telco champion as a container image, built from a fresh bento."""
    from flows.package import package
    from tests.conftest import CONFIGS

    result, workdir = telco_lifecycle
    return package(config=CONFIGS / "telco_churn.yaml", workdir=workdir, target="docker"), workdir
