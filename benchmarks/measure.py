"""What the benchmarks share: an isolated environment per variant and a measured child process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager, nullcontext, suppress
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


def copy_trained(workdir: Path, target: Path) -> Path:
    """A trained workdir's copy (registry, snapshots, bentos' staging) without what serving wrote
    into it: its prediction log, labels and endpoint state."""
    shutil.copytree(workdir, target, ignore=shutil.ignore_patterns("predictions", "serving", "labels"))
    return target


class OutOfMemory(RuntimeError):
    """The process was killed by the memory cap it ran under."""


def run_measured(
    cmd: list[str], env: dict, log: Path, stdout: Path | None = None, memory_cap_mib: int | None = None
) -> tuple[float, float]:
    """Run `cmd` to completion: (seconds, peak RSS in MiB of the process itself). Output goes to
    `log` (stdout to `stdout` when given); a failure raises with the log's tail. With a memory cap
    the process and its children run in a cgroup of that size (Linux, root): OutOfMemory if killed."""
    started = time.perf_counter()
    with (
        log.open("w") as err,
        stdout.open("w") if stdout else nullcontext(err) as out,
        memory_cgroup(memory_cap_mib) as join,
    ):
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=err if stdout else subprocess.STDOUT, preexec_fn=join
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL and memory_cap_mib:
        raise OutOfMemory(f"killed by the {memory_cap_mib} MiB memory cap after {seconds:.1f} s")
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


@contextmanager
def memory_cgroup(limit_mib: int | None):
    """A memory cgroup (v2, else v1's memory controller) of `limit_mib` MiB; yields the function a
    child runs before exec to join it (None without a limit). Swap, if any, is capped too."""
    if not limit_mib:
        yield None
        return
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    group = (Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")) / f"lifecycle-bench-{os.getpid()}"
    limits = {"memory.max": limit_mib << 20, "memory.swap.max": 0} if v2 else {"memory.limit_in_bytes": limit_mib << 20}
    try:
        group.mkdir(exist_ok=True)
        for name, value in limits.items():
            if (group / name).exists():
                (group / name).write_text(str(value))
    except OSError as exc:
        raise SystemExit(f"a memory cap needs root and a cgroup memory controller: {exc}") from exc
    procs = str(group / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    try:
        yield join
    finally:  # what the process left behind (e.g. its Prefect API server after an OOM kill) goes too
        for _ in range(100):
            left = (group / "cgroup.procs").read_text().split()
            if not left:
                break
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.1)
        group.rmdir()
