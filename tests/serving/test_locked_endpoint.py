"""A roll-out whose `Lifecycle Serving Target` block holds an API key: the real nginx stable endpoint
answers 401 without the key (by itself, whatever the service checks), 200 with it; the service is
started with LIFECYCLE_API_KEY; the key is in no log, artifact, result or state file."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

from blocks import ServingTarget, block_name
from flows.rollout import rollout
from tasks.core.errors import SettingsError
from tasks.core.records import example_record
from tasks.core.spec import load_spec
from tasks.stores.backends import read_state, state_dir, stop_backend
from tasks.stores.proxy import stop_proxy
from tests.conftest import CONFIGS
from tests.serving.server import free_port

TELCO_CONFIG = CONFIGS / "telco_churn.yaml"
TELCO = load_spec(TELCO_CONFIG)


@pytest.fixture
def key_in_block():
    """A serving target block (process) with a fresh API key; deleted after, so no other test
    of the session meets a locked endpoint."""
    key = secrets.token_urlsafe(24)
    ServingTarget(kind="process", api_key=Secret(value=key)).save(block_name(TELCO.name), overwrite=True)
    yield key
    ServingTarget.delete(block_name(TELCO.name))


def _files_holding(folder: Path, text: str) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        small = path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000
        if small and text.encode() in path.read_bytes():
            found.append(path)
    return found


def test_a_rollout_with_the_blocks_api_key_locks_the_stable_endpoint(telco_lifecycle, key_in_block, prefect_api):
    _, workdir = telco_lifecycle
    key, port = key_in_block, free_port()
    state = rollout(config=TELCO_CONFIG, workdir=workdir, port=port, return_state=True)
    result = state.result()
    folder = state_dir(workdir, TELCO.name, port)
    try:
        url, body = f"http://127.0.0.1:{port}", {"records": [example_record(TELCO)]}
        assert result.switched and result.backend.kind == "process"
        bearer, header = {"Authorization": f"Bearer {key}"}, {"x-api-key": key}
        answers = {
            "no key": httpx.post(f"{url}/predict", json=body, timeout=30),
            "wrong key": httpx.post(f"{url}/predict", json=body, headers={"Authorization": "Bearer " + "x" * 32}),
            "key in other case": httpx.post(f"{url}/predict", json=body, headers={"x-api-key": key.swapcase()}),
            "model_info, no key": httpx.post(f"{url}/model_info", json={}),
            "bearer": httpx.post(f"{url}/predict", json=body, headers=bearer, timeout=30),
            "x-api-key": httpx.post(f"{url}/predict", json=body, headers=header, timeout=30),
            "readyz, no key": httpx.get(f"{url}/readyz"),
            "livez, no key": httpx.get(f"{url}/livez"),
        }
        codes = {what: r.status_code for what, r in answers.items()}
        print(f"\nlocked stable endpoint: {codes}")
        assert codes == {
            "no key": 401, "wrong key": 401, "key in other case": 401, "model_info, no key": 401,
            "bearer": 200, "x-api-key": 200, "readyz, no key": 200, "livez, no key": 200,
        }  # fmt: skip
        assert answers["no key"].headers["www-authenticate"].startswith("Bearer")
        assert answers["bearer"].json()["model_version"] == result.model_version
        # the service itself was handed the key (its own check arrives with the service change)
        environ = Path(f"/proc/{result.backend.ident}/environ").read_bytes().split(b"\0")
        assert f"LIFECYCLE_API_KEY={key}".encode() in environ
        # nginx's config holds the key: owner-only; nothing else written holds it
        conf = folder / "nginx" / "nginx.conf"
        assert oct(conf.stat().st_mode & 0o777) == "0o600"
        leaks = [p for p in _files_holding(workdir, key) if p != conf] + _files_holding(prefect_api["results"], key)
        assert leaks == []
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            artifacts = client.read_artifacts(artifact_filter=by_run)
        assert logs and not [log.message for log in logs if key in log.message]
        assert artifacts and not [a.key for a in artifacts if key in str(a.data)]
    finally:
        live = read_state(workdir, TELCO.name, port).live
        if live:
            stop_backend(live)
        stop_proxy(folder)


def test_a_key_nginx_cannot_hold_fails_before_anything_starts(telco_lifecycle):
    _, workdir = telco_lifecycle
    ServingTarget(kind="process", api_key=Secret(value='short"key')).save(block_name(TELCO.name), overwrite=True)
    try:
        with pytest.raises(SettingsError, match="16 or more"):
            rollout(config=TELCO_CONFIG, workdir=workdir, port=free_port())
    finally:
        ServingTarget.delete(block_name(TELCO.name))
