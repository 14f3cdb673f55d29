"""What the benchmarks share: an isolated environment per variant and a measured child process."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def isolated_env(folder: Path, home: Path | None = None) -> dict:
    """No server or tracking URI from the caller; Prefect home, results and BentoML store of our own."""
    home = home or folder / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    return env | {
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(folder / "results"),
        "BENTOML_HOME": str(folder / "bentoml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def run_measured(cmd: list[str], env: dict, log: Path, stdout: Path | None = None) -> tuple[float, float]:
    """Run `cmd` to completion: (seconds, peak RSS in MiB of the process itself). Output goes to
    `log` (stdout to `stdout` when given); a failure raises with the log's tail."""
    started = time.perf_counter()
    with log.open("w") as err, stdout.open("w") if stdout else nullcontext(err) as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=err if stdout else subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024
