"""Blue/green roll-outs on a real Docker engine behind the nginx stable endpoint."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest

from blocks import RolloutSettings
from flows.lifecycle import lifecycle
from flows.rollout import rollout
from tasks.core.records import example_record
from tasks.core.spec import load_spec
from tasks.stores import registry
from tasks.stores.backends import RolloutFailed, read_state, state_dir, stop_backend
from tasks.stores.keepalive import stable_client
from tasks.stores.proxy import stop_proxy
from tests.conftest import CONFIGS
from tests.serving.server import free_port

TELCO_CONFIG = CONFIGS / "telco_churn.yaml"
TELCO = load_spec(TELCO_CONFIG)
NO_WATCH = RolloutSettings(watch_seconds=0)  # the watch has tests of its own (test_progressive.py)


class Poller(threading.Thread):
    """A client that keeps calling the stable endpoint and records every answer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.answers = url, threading.Event(), []

    def run(self) -> None:
        body = {"records": [example_record(TELCO)]}
        with stable_client(self.url, timeout=10) as client:  # the endpoint's keep-alive policy
            while not self.stop.is_set():
                try:
                    r = client.post("/predict", json=body)
                    self.answers.append(
                        (r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text)
                    )
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc)))
                time.sleep(0.02)


@pytest.fixture(scope="module")
def stable(docker_engine, prefect_api, tmp_path_factory):
    """A lifecycle of its own: these tests move registry aliases."""
    workdir = tmp_path_factory.mktemp("rollout")
    lifecycle(config=TELCO_CONFIG, workdir=workdir, n_trials=5)
    port = free_port()
    yield port, workdir
    state = read_state(workdir, TELCO.name, port)
    if state.live:
        stop_backend(state.live)
    stop_proxy(state_dir(workdir, TELCO.name, port))


def test_roll_out_n_to_n_plus_1_never_drops_a_request(stable):
    port, workdir = stable
    first = rollout(config=TELCO_CONFIG, workdir=workdir, port=port)
    assert httpx.post(f"http://127.0.0.1:{port}/model_info", json={}).json()["model_version"] == first.model_version

    second = lifecycle(config=TELCO_CONFIG, workdir=workdir, n_trials=6)  # a new candidate, new version
    cfg = registry.default_tracking(workdir, TELCO.name, TELCO.registered_model_name)
    if not second.registry.promoted:  # whatever the gate said, this test needs it as champion
        registry.promote(cfg, second.registry.version)
    new_version = second.registry.version
    assert new_version != first.model_version

    poller = Poller(f"http://127.0.0.1:{port}")
    poller.start()
    time.sleep(1)
    done = rollout(config=TELCO_CONFIG, workdir=workdir, port=port, plan=NO_WATCH)
    time.sleep(1)
    poller.stop.set()
    poller.join()

    assert done.model_version == new_version and done.previous_version == first.model_version
    failures = [a for a in poller.answers if a[0] != 200]
    assert not failures, failures[:5]
    versions = [v for _, v in poller.answers]
    assert versions[0] == first.model_version and versions[-1] == new_version
    assert set(versions) == {first.model_version, new_version}
    print(f"\n{len(versions)} requests during the roll-out, none failed")


def test_a_failed_roll_out_keeps_the_old_version_serving_and_the_alias(stable):
    port, workdir = stable
    cfg = registry.default_tracking(workdir, TELCO.name, TELCO.registered_model_name)
    live = read_state(workdir, TELCO.name, port).live
    assert live is not None
    # make another version champion, then roll it out into a container that cannot start
    other = next(v.version for v in registry.versions(cfg) if v.version != live.model_version)
    registry.promote(cfg, other)
    assert registry.version_by_alias(cfg, registry.PREVIOUS).version == live.model_version
    before = _backend_containers()
    with pytest.raises(RolloutFailed, match="not ready"):
        rollout(
            config=TELCO_CONFIG,
            workdir=workdir,
            port=port,
            ready_timeout=25,
            plan=NO_WATCH,
            backend_env={"LIFECYCLE_BUNDLE": "/nonexistent/bundle.json"},
        )
    assert registry.version_by_alias(cfg, registry.CHAMPION).version == live.model_version
    info = httpx.post(f"http://127.0.0.1:{port}/model_info", json={}).json()
    assert info["model_version"] == live.model_version
    assert read_state(workdir, TELCO.name, port).live == live
    assert _backend_containers() == before  # the failed version's container is gone, the live one stays


def _backend_containers() -> set[str]:
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
    return {n for n in names.split() if n.startswith("lifecycle-")}
