"""A real Docker engine: the one that answers, or one started (and stopped) for the session."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT

ENGINE = ROOT / "deployments" / "docker" / "engine.sh"


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_api):
    return prefect_api


@pytest.fixture(scope="session")
def docker_engine():
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


@pytest.fixture(scope="session")
def telco_image(docker_engine, telco_lifecycle):
    """The Telco champion as a container image, built from a fresh bento."""
    from flows.package import package
    from tests.conftest import CONFIGS

    result, workdir = telco_lifecycle
    return package(config=CONFIGS / "telco_churn.yaml", workdir=workdir, target="docker"), workdir
