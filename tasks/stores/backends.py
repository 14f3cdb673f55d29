"""Serving back-ends: a bento as a local process or a container on a loopback port, started,
checked (readiness, smoke rows), stopped; and the state of each stable endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
from pydantic import BaseModel, SecretStr

from tasks.stores.bento_server import SERVER_ENV, serve_command
from tasks.stores.workdir import Workdir

Kind = Literal["docker", "process"]
API_KEY_ENV = "LIFECYCLE_API_KEY"  # set → the service answers 401 without the key (but its probes)


class Backend(BaseModel):
    kind: Kind
    ident: str  # container id or process id
    port: int
    model_version: str
    artifact: str  # image or bento tag

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServingState(BaseModel):
    """What serves a dataset now: the stable port and the live backend."""

    port: int
    live: Backend | None = None


class RolloutFailed(RuntimeError):
    pass


def state_dir(workdir: Path, dataset: str, port: int) -> Path:
    """One folder per stable endpoint: its state and its proxy."""
    return Workdir(workdir).endpoint(dataset, port)


def read_state(workdir: Path, dataset: str, port: int) -> ServingState:
    path = state_dir(workdir, dataset, port) / "state.json"
    return ServingState.model_validate_json(path.read_text()) if path.is_file() else ServingState(port=port)


def write_state(workdir: Path, dataset: str, state: ServingState) -> None:
    folder = state_dir(workdir, dataset, state.port)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".state.json.tmp"
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(folder / "state.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_container(image: str, port: int, env: dict[str, str], name: str, limits: dict) -> str:
    from prefect_docker.containers import create_docker_container, start_docker_container
    from prefect_docker.host import DockerHost

    host = DockerHost(base_url=os.environ.get("DOCKER_HOST"))
    container = await create_docker_container(
        image=image,
        command=["serve", "--host", "127.0.0.1", "--port", str(port)],  # host network: loopback only
        name=name,
        environment=env,
        network_mode="host",
        labels={"lifecycle.role": "backend"},
        docker_host=host,
        **limits,
    )
    await start_docker_container(container_id=container.id, docker_host=host)
    return container.id


async def _remove_container(container_id: str) -> None:
    from docker.errors import NotFound
    from prefect_docker.containers import remove_docker_container
    from prefect_docker.host import DockerHost

    with contextlib.suppress(NotFound):  # already gone: nothing to retire
        await remove_docker_container(
            container_id=container_id, force=True, docker_host=DockerHost(base_url=os.environ.get("DOCKER_HOST"))
        )


def container_limits(cpus: float | None, memory: str | None) -> dict:
    """docker SDK `containers.create` arguments for the serving target's resources; a process
    back-end reads the same two (`process_limits`)."""
    limits = {}
    if cpus:
        limits["nano_cpus"] = int(cpus * 1e9)
    if memory:
        limits["mem_limit"] = memory
    return limits


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def memory_bytes(memory: str) -> int:
    """Docker's memory notation (`512m`, `2g`, bytes) in bytes."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([bkmg]?)b?\s*", memory.lower())
    if not match:
        raise ValueError(f"memory limit {memory!r}: use a number with b, k, m or g (e.g. 2g)")
    return int(match[1]) * _UNITS[match[2]]


def process_limits(limits: dict):
    """For a process back-end: its CPUs as a CPU-affinity set of ceil(cpus) cores, its memory as
    the cap on its (and its workers') address space — stricter than a container's resident-memory
    limit, so give it headroom. Returns the `preexec_fn` that applies them, or None."""
    cores = sorted(os.sched_getaffinity(0))
    wanted = math.ceil(limits["nano_cpus"] / 1e9) if limits.get("nano_cpus") else None
    memory = memory_bytes(str(limits["mem_limit"])) if limits.get("mem_limit") else None
    if wanted is None and memory is None:
        return None

    def apply() -> None:
        if wanted is not None:
            os.sched_setaffinity(0, cores[: max(1, min(wanted, len(cores)))])
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply


def key_headers(key: SecretStr | None) -> dict[str, str]:
    """What a client of a locked service sends."""
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}


def start_backend(
    kind: Kind,
    artifact: str,
    model_version: str,
    env: dict[str, str],
    log_dir: Path,
    limits: dict | None = None,
    api_key: SecretStr | None = None,
) -> Backend:
    """Start the bento on a free port; with `api_key` the service gets it as LIFECYCLE_API_KEY
    (only the key given here: an inherited one is dropped)."""
    port = free_port()
    env = SERVER_ENV | {k: v for k, v in env.items() if k != API_KEY_ENV}
    if api_key is not None:
        env[API_KEY_ENV] = api_key.get_secret_value()
    if kind == "docker":
        name = f"lifecycle-{artifact.split('/')[-1].replace(':', '-')}-{port}"
        ident = asyncio.run(_start_container(artifact, port, env, name, limits or {}))
    else:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"backend-{port}.log").open("w")
        proc = subprocess.Popen(
            serve_command(artifact, "127.0.0.1", port),
            env={k: v for k, v in os.environ.items() if k != API_KEY_ENV} | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=process_limits(limits or {}),
        )
        ident = str(proc.pid)
    return Backend(kind=kind, ident=ident, port=port, model_version=model_version, artifact=artifact)


def stop_backend(backend: Backend) -> None:
    if backend.kind == "docker":
        asyncio.run(_remove_container(backend.ident))
        return
    try:
        os.killpg(int(backend.ident), signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(60):
        with contextlib.suppress(ChildProcessError):  # started by this process: reap it (a zombie still "exists")
            os.waitpid(int(backend.ident), os.WNOHANG)
        try:
            os.killpg(int(backend.ident), 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(int(backend.ident), signal.SIGKILL)


def wait_ready(backend: Backend, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{backend.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RolloutFailed(f"{backend.artifact} on port {backend.port} was not ready within {timeout:.0f}s")


def smoke_test(
    backend: Backend, records: list[dict], expected: np.ndarray, score_column: str, api_key: SecretStr | None = None
) -> None:
    """The new backend must give the model's offline scores (its task's `score_column`) on the same rows."""
    try:
        response = httpx.post(
            f"{backend.url}/predict", json={"records": records}, headers=key_headers(api_key), timeout=30
        )
    except httpx.HTTPError as exc:
        raise RolloutFailed(f"smoke request failed: {exc}") from exc
    if response.status_code != 200:
        raise RolloutFailed(f"smoke request answered {response.status_code}: {response.text[:500]}")
    body = response.json()
    got = np.array([p[score_column] for p in body["predictions"]])
    if body["model_version"] != backend.model_version:
        raise RolloutFailed(f"backend reports model v{body['model_version']}, expected v{backend.model_version}")
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-9):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
        raise RolloutFailed(f"smoke predictions differ from the model's offline ones (max diff {worst})")
