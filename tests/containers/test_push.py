"""The serving-target block's image repository and registry credentials: `package
--target docker` names the image after the repository and pushes it (prefect-docker's
push step) to a real registry (Debian's docker-registry, basic auth over loopback)."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest

from blocks import ServingTarget, block_name
from tasks.core.errors import SettingsError
from tests.conftest import CONFIGS
from tests.serving.server import free_port

USER, PASSWORD = "pusher", "s3cret-for-tests"


@pytest.fixture
def registry(tmp_path, docker_engine):
    binary = shutil.which("docker-registry")
    assert binary and shutil.which("htpasswd"), "Debian's docker-registry and apache2-utils (.ci/run installs them)"
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
    (tmp_path / "htpasswd").write_text(htpasswd.stdout)
    port = free_port()
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
        f"auth: {{htpasswd: {{realm: tests, path: {tmp_path / 'htpasswd'}}}}}\n"
    )
    proc = subprocess.Popen(
        [binary, "serve", str(tmp_path / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(60):
        try:
            if httpx.get(f"{url}/v2/", timeout=2).status_code == 401:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield f"127.0.0.1:{port}", url
    proc.terminate()
    proc.wait(timeout=30)


def _save_target(host: str, password: str) -> None:
    from prefect_docker.credentials import DockerRegistryCredentials

    credentials = DockerRegistryCredentials(username=USER, password=password, registry_url=host)
    ServingTarget(kind="docker", image_repository=f"{host}/lifecycle", registry_credentials=credentials).save(
        block_name("telco_churn"), overwrite=True
    )


def test_package_pushes_the_image_with_the_blocks_credentials(registry, telco_image):
    from flows.package import package

    host, url = registry
    _, workdir = telco_image
    try:
        _save_target(host, PASSWORD)
        packaged = package(config=CONFIGS / "telco_churn.yaml", workdir=workdir, target="docker")
        assert packaged.image.startswith(f"{host}/lifecycle/")
        catalog = httpx.get(f"{url}/v2/_catalog", auth=(USER, PASSWORD), timeout=10).json()
        name, tag = packaged.image.removeprefix(f"{host}/").rsplit(":", 1)
        assert name in catalog["repositories"], catalog
        tags = httpx.get(f"{url}/v2/{name}/tags/list", auth=(USER, PASSWORD), timeout=10).json()
        assert tag in tags["tags"]

        _save_target(host, "wrong-password")
        with pytest.raises(SettingsError, match="failed: .*401 Unauthorized"):
            package(config=CONFIGS / "telco_churn.yaml", workdir=workdir, target="docker")
    finally:  # other tests package this dataset without a serving block
        ServingTarget.delete(block_name("telco_churn"))
