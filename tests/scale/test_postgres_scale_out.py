"""Scale-out on existing engines, selected by configuration only: the Prefect server and
MLflow's backend store on PostgreSQL, and two Optuna workers (a prefect-dask cluster of
processes) sharing one PostgreSQL-backed study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT
from tests.deploy.conftest import _spawn, _stop
from tests.serving.server import free_port, wait_until_ok

POSTGRES = ROOT / "deployments" / "postgres.sh"
PREFECT = str(Path(sys.executable).with_name("prefect"))
TRIALS, WORKERS = 12, 2


@pytest.fixture(scope="module")
def postgres():
    folder = Path(tempfile.mkdtemp(prefix="lifecycle-pg-"))
    folder.chmod(0o755)  # the server runs as `postgres` when we are root
    port = free_port()
    out = subprocess.run(
        ["bash", str(POSTGRES), "start", str(folder / "data"), str(port), "prefect", "mlflow", "optuna"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    yield out.stdout.strip().splitlines()[-1], port
    subprocess.run(["bash", str(POSTGRES), "stop", str(folder / "data")], capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stack_on_postgres(postgres, tmp_path_factory):
    base, port = postgres
    home = tmp_path_factory.mktemp("prefect-pg-home")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{api_port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": base.replace("postgresql://", "postgresql+psycopg2://") + "/mlflow",
        "LIFECYCLE_OPTUNA_STORAGE": base.replace("postgresql://", "postgresql+psycopg2://") + "/optuna",
    }
    server = _spawn([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(api_port)], env, home / "s.log")
    wait_until_ok(f"http://127.0.0.1:{api_port}/api/health", 180, lambda: (home / "s.log").read_text()[-3000:])
    yield env, port
    _stop(server)


def _flow(env: dict, module: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], out.stdout[-3000:] + out.stderr[-3000:]
    return result


def test_two_workers_share_a_postgres_study_with_prefect_and_mlflow_on_postgres(stack_on_postgres, tmp_path):
    import optuna
    from mlflow import MlflowClient

    env, port = stack_on_postgres
    config = str(CONFIGS / "telco_churn.yaml")
    prepared = _flow(env, "flows.prepare", "--config", config, "--workdir", str(tmp_path))
    trained = _flow(
        env, "flows.train", "--config", config, "--manifest-path", prepared["manifest_path"],
        "--workdir", str(tmp_path), "--n-trials", str(TRIALS), "--workers", str(WORKERS),
    )  # fmt: skip

    # Optuna: one study in PostgreSQL, filled by two processes at the same time
    study_name = next(s.study_name for s in optuna.get_all_study_summaries(env["LIFECYCLE_OPTUNA_STORAGE"]))
    study = optuna.load_study(study_name=study_name, storage=env["LIFECYCLE_OPTUNA_STORAGE"])
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= TRIALS and trained["n_trials"] == len(finished)
    by_worker = {}
    for t in finished:
        by_worker.setdefault(t.user_attrs["worker_pid"], []).append(t)
    assert len(by_worker) == WORKERS, by_worker.keys()
    spans = [(min(t.datetime_start for t in ts), max(t.datetime_complete for t in ts)) for ts in by_worker.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the workers did not overlap: {spans}"

    # MLflow: the run lives in PostgreSQL, its artifacts under the workdir
    run = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_run(trained["run_id"])
    assert run.data.metrics["validation_auc"] == pytest.approx(trained["validation_score"])
    assert run.info.artifact_uri.startswith(tmp_path.resolve().as_uri())

    # Prefect: the flow runs are rows of the server's PostgreSQL database
    query = "select name from flow_run order by created"
    names = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "prefect", "-tAc", query],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "prepare-telco_churn" in names and any(n.startswith("tune-parallel-") for n in names), names
    overlap = (min(e for _, e in spans) - max(s for s, _ in spans)).total_seconds()
    print(f"\n{len(finished)} trials by {WORKERS} worker processes, running side by side for {overlap:.1f}s")
