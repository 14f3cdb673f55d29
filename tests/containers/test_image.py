"""The service image on a real Docker engine: built, run, answering correctly over HTTP."""

from __future__ import annotations

import subprocess

import httpx
import mlflow.pyfunc
import numpy as np

from tasks.core.spec import load_spec
from tasks.stores import registry
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS
from tests.serving.server import free_port, wait_until_ok

TELCO = load_spec(CONFIGS / "telco_churn.yaml")


def test_image_serves_the_champion_from_inside_a_container(telco_image, telco_lifecycle):
    packaged, workdir = telco_image
    result, _ = telco_lifecycle
    assert packaged.image and packaged.image.endswith(packaged.bento_tag.split(":")[1])
    port = free_port()
    container = subprocess.run(
        ["docker", "run", "-d", "--network", "host", "-e", "LIFECYCLE_PREDICTION_LOG_DIR=/tmp/predictions",
         packaged.image, "serve", "--port", str(port)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ok(
            f"{url}/readyz",
            120,
            lambda: subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout[-3000:],
        )
        rows = read_split(result.prepare.manifest_path, "test").select(TELCO.base_features).head(20)
        answer = httpx.post(f"{url}/predict", json={"records": rows.to_dicts()}, timeout=30).json()
        cfg = registry.default_tracking(workdir, TELCO.name, TELCO.registered_model_name)
        cfg.activate()
        expected = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion").predict(rows.to_pandas())
        assert np.allclose([p["probability"] for p in answer["predictions"]], expected["probability"], atol=1e-12)
        assert answer["model_version"] == packaged.model_version
        info = httpx.post(f"{url}/model_info", json={}, timeout=30).json()
        assert info["data_version"] == result.prepare.data_version
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    assert subprocess.run(["docker", "inspect", container], capture_output=True).returncode != 0


def test_containerizing_the_same_bento_again_is_a_cache_hit(telco_image):
    from flows.package import package

    packaged, workdir = telco_image
    again = package(config=CONFIGS / "telco_churn.yaml", workdir=workdir, target="docker")
    assert (again.image, again.built_image, again.built_bento) == (packaged.image, False, False)
    assert again.image.startswith("lifecycle/")
