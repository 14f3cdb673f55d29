"""Progressive delivery behind the real nginx endpoint with real `bentoml serve` back-ends: canary
steps, guardrail roll-backs (a challenger answering 5xx, a slow one), shadow, the post-switch
watch, staging with approval."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import bentoml
import httpx
import pytest
import yaml
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from blocks import RolloutSettings
from flows.lifecycle import lifecycle
from flows.rollout import rollout
from tasks.common import artifact_key
from tasks.core.spec import load_spec, read_yaml
from tasks.stores import registry
from tasks.stores.backends import RolloutFailed, read_state, state_dir, stop_backend
from tasks.stores.keepalive import stable_client
from tasks.stores.proxy import stop_proxy
from tasks.stores.served import read_log
from tasks.stores.snapshots import read_split
from tasks.stores.workdir import Workdir
from tests.conftest import CONFIGS, FIXTURES
from tests.serving.server import BENTOML, free_port

TELCO_CONFIG = CONFIGS / "telco_churn.yaml"
TELCO = load_spec(TELCO_CONFIG)
RAILS = {"max_error_rate": 0.05, "max_p95_ms": 250, "min_requests": 20, "max_prediction_shift": 0.5}


class Client(threading.Thread):
    """A steady client of the stable endpoint: (time, status, model version or error) per answer."""

    def __init__(self, url: str, rows: list[dict]):
        super().__init__(daemon=True)
        self.url, self.rows, self.stop, self.answers, self.retried = url, rows, threading.Event(), [], 0

    def run(self) -> None:
        def on_retry(request: httpx.Request) -> None:
            self.retried += 1

        # the endpoint's keep-alive policy: a request a reload cut off unanswered is sent once more
        with stable_client(self.url, on_retry, timeout=10) as client:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                body = {"records": [self.rows[i % len(self.rows)]]}
                try:
                    r = client.post("/predict", json=body)
                    seen = r.json()["model_version"] if r.status_code == 200 else r.text[:80]
                    self.answers.append((time.time(), r.status_code, seen))
                except httpx.HTTPError as exc:
                    self.answers.append((time.time(), 0, repr(exc)))
                time.sleep(0.005)


class Traffic:
    """Two steady clients for the length of a `with` block, sending the test split's rows."""

    def __init__(self, endpoint: dict):
        self.clients = [Client(f"http://127.0.0.1:{endpoint['port']}", endpoint["rows"][i::2]) for i in range(2)]

    def __enter__(self) -> Traffic:
        for c in self.clients:
            c.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)
        for c in self.clients:
            c.stop.set()
            c.join()

    def answers(self, start: float = 0, end: float = float("inf")) -> list[tuple]:
        return sorted(a for c in self.clients for a in c.answers if start <= a[0] < end)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """Two versions of the Telco model, v1 live behind the endpoint (a workdir of its own: these
    tests move aliases)."""
    workdir = tmp_path_factory.mktemp("progressive")
    first = lifecycle(config=TELCO_CONFIG, workdir=workdir, n_trials=5)
    port = free_port()
    rollout(config=TELCO_CONFIG, workdir=workdir, port=port, target="process", plan=RolloutSettings(watch_seconds=0))
    second = lifecycle(config=TELCO_CONFIG, workdir=workdir, n_trials=6)
    cfg = registry.default_tracking(workdir, TELCO.name, TELCO.registered_model_name)
    v1, v2 = first.registry.version, second.registry.version
    assert v1 != v2
    rows = read_split(first.prepare.manifest_path, "test").select(TELCO.base_features).head(400).to_dicts()
    yield {"port": port, "workdir": workdir, "cfg": cfg, "v1": v1, "v2": v2, "rows": rows, "faulty": {}}
    state = read_state(workdir, TELCO.name, port)
    if state.live:
        stop_backend(state.live)
    stop_proxy(state_dir(workdir, TELCO.name, port))


def _champion(endpoint, version: str) -> None:
    """Make `version` champion (the live one becomes `previous`)."""
    registry.promote(endpoint["cfg"], version)
    assert registry.version_by_alias(endpoint["cfg"], registry.CHAMPION).version == version


def _live(endpoint) -> str:
    return httpx.post(f"http://127.0.0.1:{endpoint['port']}/model_info", json={}).json()["model_version"]


def _other(endpoint) -> str:
    return endpoint["v2"] if _live(endpoint) == endpoint["v1"] else endpoint["v1"]


def _plan(**fields) -> RolloutSettings:
    return RolloutSettings(**({"check_seconds": 1, "watch_seconds": 0, "guardrails": RAILS} | fields))


def _faulty_bento(endpoint, tmp_path: Path) -> str:
    """The champion's bento rebuilt with `faulty.py` (faults switched on by a file), once per version."""
    packaged = _package(endpoint)
    if packaged.model_version in endpoint["faulty"]:
        return endpoint["faulty"][packaged.model_version]
    src = Path(bentoml.get(packaged.bento_tag).path) / "src"
    build = tmp_path / "faulty-build"
    shutil.copytree(src, build)
    shutil.copy2(FIXTURES / "faulty" / "faulty.py", build / "faulty.py")
    recipe = read_yaml(build / "bentofile.yaml") | {"service": "faulty:TabularService"}
    (build / "bentofile.yaml").write_text(yaml.safe_dump(recipe))  # what the real bento includes
    version = f"{packaged.bento_tag.split(':')[1]}-faulty{time.time_ns()}"
    out = subprocess.run([BENTOML, "build", str(build), "--name", "telco-faulty", "--version", version,
                          "--output", "tag"], capture_output=True, text=True, cwd=build)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    endpoint["faulty"][packaged.model_version] = f"telco-faulty:{version}"
    return endpoint["faulty"][packaged.model_version]


def _tags(endpoint, version: str) -> dict[str, str]:
    return next(v.tags for v in registry.versions(endpoint["cfg"]) if v.version == version)


def _package(endpoint):
    from flows.package import package

    return package(config=TELCO_CONFIG, workdir=endpoint["workdir"], target="process")


def _shares(traffic: Traffic, report, new: str) -> float:
    answered = traffic.answers(report.started_at, report.started_at + report.seconds)
    return 100 * sum(1 for a in answered if a[2] == new) / len(answered)


def test_canary_steps_give_the_new_version_its_share_and_end_with_it_alone(endpoint):
    old, new = _live(endpoint), _other(endpoint)
    _champion(endpoint, new)
    plan = _plan(strategy="canary", steps=[10, 50, 100], bake_seconds=15)
    with Traffic(endpoint) as traffic:
        done = rollout(config=TELCO_CONFIG, workdir=endpoint["workdir"], port=endpoint["port"], target="process",
                       plan=plan)  # fmt: skip
    assert done.model_version == new and done.previous_version == old and done.strategy == "canary"
    steps = [s for s in done.steps if s.name.startswith("canary")]
    assert [s.share for s in steps] == [10, 50]
    measured = [_shares(traffic, s, new) for s in steps]
    print(f"\nclient-side shares of v{new}: {[f'{m:.1f}%' for m in measured]}; server-side "
          f"{[s.served_share for s in steps]}; requests {len(traffic.answers())}")  # fmt: skip
    for step, share in zip(steps, measured, strict=True):
        assert abs(share - step.share) <= 5, (step.name, share)
        assert abs(step.served_share - step.share) <= 5, step
    failed = [a for a in traffic.answers() if a[1] != 200]
    assert not failed, failed[:5]
    assert traffic.answers()[-1][2] == new and _live(endpoint) == new
    assert read_state(endpoint["workdir"], TELCO.name, endpoint["port"]).live.model_version == new
    tags = _tags(endpoint, new)
    assert tags["lifecycle.rollout.outcome"] == "live" and "canary 10%" in tags["lifecycle.rollout.steps"]


@pytest.mark.parametrize(
    ("faults", "breach"),
    [({"error_share": 0.3}, "error rate"), ({"delay_ms": 400}, "p95")],
    ids=["answers-5xx", "slow"],
)
def test_a_bad_challenger_rolls_back_at_the_first_canary_step(endpoint, tmp_path, monkeypatch, faults, breach):
    old, new = _live(endpoint), _other(endpoint)
    _champion(endpoint, new)
    bento = _faulty_bento(endpoint, tmp_path)
    switch = tmp_path / "faults.json"
    switch.write_text(json.dumps(faults))
    plan = _plan(strategy="canary", steps=[10, 50, 100], bake_seconds=20)
    with Traffic(endpoint) as traffic:
        with pytest.raises(RolloutFailed, match=breach) as failed:
            rollout(config=TELCO_CONFIG, workdir=endpoint["workdir"], port=endpoint["port"], target="process",
                    plan=plan, bento=bento, backend_env={"LIFECYCLE_TEST_FAULTS": str(switch)})  # fmt: skip
        rolled_back = time.time()
        time.sleep(2)
    note = str(failed.value)
    assert "canary 10%" in note and f"traffic back on v{old}" in note
    assert registry.version_by_alias(endpoint["cfg"], registry.CHAMPION).version == old
    during = traffic.answers(end=rolled_back)
    errors = [a for a in during if a[1] != 200]
    print(f"\n{breach}: {len(errors)} of {len(during)} answers failed before the roll-back; {note}")
    assert len(errors) <= 0.10 * len(during) + 3
    after = traffic.answers(start=rolled_back)
    assert after and all(a[1] == 200 and a[2] == old for a in after), after[:5]
    assert _live(endpoint) == old


def test_shadow_never_answers_clients_and_its_answers_are_compared(endpoint):
    old, new = _live(endpoint), _other(endpoint)
    _champion(endpoint, new)
    plan = _plan(strategy="shadow", bake_seconds=10)
    with Traffic(endpoint) as traffic:
        done = rollout(config=TELCO_CONFIG, workdir=endpoint["workdir"], port=endpoint["port"], target="process",
                       plan=plan)  # fmt: skip
    shadow = next(s for s in done.steps if s.name == "shadow")
    during = traffic.answers(shadow.started_at, shadow.started_at + shadow.seconds)
    assert during and {a[2] for a in during} == {old}, {a[2] for a in during}
    mirrored = read_log(Workdir(endpoint["workdir"]).shadow_log(TELCO.name))
    mine = mirrored.filter(mirrored["logged_at"] >= shadow.started_at)
    assert mine.height >= 20 and set(mine["model_version"]) == {new}
    assert shadow.challenger.rows_scored >= 20 and shadow.agreement is not None and shadow.agreement > 0.5
    assert shadow.prediction_shift is not None
    assert _live(endpoint) == new
    tags = _tags(endpoint, new)
    assert "shadow" in tags["lifecycle.rollout.steps"] and "agreement" in tags["lifecycle.rollout.steps"]
    comparison = Artifact.get(f"{artifact_key(TELCO.name)}-rollout").data  # the comparison, in the UI
    assert f"({plan.strategy}): live" in comparison and f"| shadow | {shadow.seconds} |" in comparison
    print(f"\nshadow: {shadow.challenger.rows_scored} rows mirrored, agreement {shadow.agreement:.3f}, "
          f"shift {shadow.prediction_shift:.3f}")  # fmt: skip


def test_a_breach_in_the_watch_window_goes_back_to_the_old_version(endpoint, tmp_path):
    old, new = _live(endpoint), _other(endpoint)
    _champion(endpoint, new)
    bento = _faulty_bento(endpoint, tmp_path)
    switch = tmp_path / "faults.json"
    plan = _plan(strategy="blue_green", watch_seconds=30)

    def break_after_the_switch():
        deadline = time.time() + 120
        while time.time() < deadline and not any(a[2] == new for a in traffic.answers(start=time.time() - 1)):
            time.sleep(0.2)
        time.sleep(2)
        switch.write_text(json.dumps({"error_share": 0.5}))

    with Traffic(endpoint) as traffic:
        breaker = threading.Thread(target=break_after_the_switch, daemon=True)
        breaker.start()
        with pytest.raises(RolloutFailed, match="watch after the switch") as failed:
            rollout(config=TELCO_CONFIG, workdir=endpoint["workdir"], port=endpoint["port"], target="process",
                    plan=plan, bento=bento, backend_env={"LIFECYCLE_TEST_FAULTS": str(switch)})  # fmt: skip
        rolled_back = time.time()
        time.sleep(2)
    assert f"traffic back on v{old}" in str(failed.value)
    broke = switch.stat().st_mtime
    before = [a for a in traffic.answers(end=broke) if a[1] != 200]
    assert not before, before[:5]  # nothing failed until the fault was switched on
    after = traffic.answers(start=rolled_back)
    assert after and all(a[1] == 200 and a[2] == old for a in after), after[:5]
    breach = traffic.answers(broke, rolled_back)
    print(f"\nwatch: {sum(a[1] != 200 for a in breach)} failed of {len(breach)} answers in the "
          f"{rolled_back - broke:.1f}s from the fault to the roll-back")  # fmt: skip
    assert registry.version_by_alias(endpoint["cfg"], registry.CHAMPION).version == old


def _paused_rollout(timeout: float = 120):
    """The id of the roll-out flow run waiting for approval."""
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            if runs:
                return runs[0].id
            time.sleep(0.5)
    raise AssertionError("no roll-out paused for approval")


# an approval resumed through the API, by a real worker's run: tests/deploy/test_prefect_deploy.py
@pytest.mark.parametrize("answer", ["reject", "time out"])
def test_staging_waits_for_approval_and_a_no_leaves_production_as_it_was(endpoint, answer):
    old, new = _live(endpoint), _other(endpoint)
    _champion(endpoint, new)
    staging = free_port()
    timeout = 8 if answer == "time out" else 300
    plan = _plan(staging={"port": staging, "requests": 40, "approval_timeout_seconds": timeout})
    outcome = {}

    def run():
        try:
            outcome["result"] = rollout(config=TELCO_CONFIG, workdir=endpoint["workdir"], port=endpoint["port"],
                                        target="process", plan=plan)  # fmt: skip
        except RolloutFailed as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if answer == "reject":
        run_id = _paused_rollout()
        # waiting: staging serves the new version, production the old one
        assert httpx.post(f"http://127.0.0.1:{staging}/model_info", json={}).json()["model_version"] == new
        assert _live(endpoint) == old
        resume_flow_run(run_id, run_input={"approve": False, "note": "by the test"})
    thread.join(timeout=300)
    stop_proxy(state_dir(endpoint["workdir"], TELCO.name, staging))  # an approved staging keeps serving
    assert not thread.is_alive()
    assert "not approved" in outcome["error"], outcome
    assert _live(endpoint) == old
    assert registry.version_by_alias(endpoint["cfg"], registry.CHAMPION).version == old
