"""`python -m flows.<phase>` as a user runs it from the README: no server, a new Prefect home,
none of the settings a Makefile or a test harness would add."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import FIXTURES, ROOT


def _users_shell(home) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_")) and k != "DO_NOT_TRACK"}
    return env | {"HOME": str(home)}


def _python(code: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


SHOW = """
from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED as A
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as T
from flows.cli import local_defaults
with local_defaults():
    print(T.value(), A.value())
"""


def test_the_start_up_limit_holds_on_a_new_or_busy_machine_and_what_the_user_set_wins(tmp_path):
    assert _python(SHOW, _users_shell(tmp_path)) == "180 False"  # Prefect's own: 20 s, analytics on
    users = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45", "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    assert _python(SHOW, _users_shell(tmp_path) | users) == "45 True"


def test_a_flow_from_the_shell_on_a_new_prefect_home_starts_its_api_and_sends_no_telemetry(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "flows.prepare",
        "--config",
        str(FIXTURES / "orders.yaml"),
        "--workdir",
        str(tmp_path / "w"),
    ]
    out = subprocess.run(
        cmd, cwd=ROOT, env=_users_shell(tmp_path / "home"), capture_output=True, text=True, timeout=600
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["ok"]
    assert "Starting temporary server" in log  # Prefect's temporary API, with a database created on the spot
    assert (tmp_path / "home" / ".prefect").is_dir()
    assert "telemetry" not in log.lower(), log[-3000:]
