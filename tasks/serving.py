"""Running services: start a backend (container or local process), check it, switch the
stable endpoint to it, retire the old one.

The stable endpoint is a small nginx (Debian's `nginx-light`) on a fixed loopback port
that proxies to the live backend; a switch rewrites its upstream and reloads it
gracefully, so clients keep the same address and in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.common import UNCACHED
from tasks.events import ROLLOUT_ROLLED_BACK, emit_model_event

Kind = Literal["docker", "process"]


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
    return Path(workdir).resolve() / "serving" / dataset / str(port)


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


# -- backends ------------------------------------------------------------------------------
async def _start_container(image: str, port: int, env: dict[str, str], name: str, limits: dict) -> str:
    from prefect_docker.containers import create_docker_container, start_docker_container
    from prefect_docker.host import DockerHost

    host = DockerHost(base_url=os.environ.get("DOCKER_HOST"))
    container = await create_docker_container(
        image=image,
        command=["serve", "--port", str(port)],
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
    """docker SDK `containers.create` arguments for the serving target's resources."""
    limits = {}
    if cpus:
        limits["nano_cpus"] = int(cpus * 1e9)
    if memory:
        limits["mem_limit"] = memory
    return limits


def start_backend(
    kind: Kind, artifact: str, model_version: str, env: dict[str, str], log_dir: Path, limits: dict | None = None
) -> Backend:
    port = free_port()
    if kind == "docker":
        name = f"lifecycle-{artifact.split('/')[-1].replace(':', '-')}-{port}"
        ident = asyncio.run(_start_container(artifact, port, env, name, limits or {}))
    else:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"backend-{port}.log").open("w")
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("bentoml")),
                "serve",
                artifact,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=os.environ | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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


def smoke_test(backend: Backend, records: list[dict], expected: np.ndarray) -> None:
    """The new backend must give the model's offline predictions on the same rows."""
    try:
        response = httpx.post(f"{backend.url}/predict", json={"records": records}, timeout=30)
    except httpx.HTTPError as exc:
        raise RolloutFailed(f"smoke request failed: {exc}") from exc
    if response.status_code != 200:
        raise RolloutFailed(f"smoke request answered {response.status_code}: {response.text[:500]}")
    body = response.json()
    got = np.array([p["probability"] for p in body["predictions"]])
    if body["model_version"] != backend.model_version:
        raise RolloutFailed(f"backend reports model v{body['model_version']}, expected v{backend.model_version}")
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-9):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
        raise RolloutFailed(f"smoke predictions differ from the model's offline ones (max diff {worst})")


# -- the stable endpoint ------------------------------------------------------------------------
NGINX_CONF = """worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_max_body_size 512m;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 300s;
    }}
  }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise RolloutFailed("the stable endpoint needs nginx (Debian: apt-get install -y nginx-light)")
    return found


def point_proxy(folder: Path, port: int, backend_port: int) -> None:
    """Start the proxy on `port`, or repoint it at `backend_port` with a graceful reload."""
    prefix = folder / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, backend=backend_port))
    cmd = [nginx_binary(), "-p", str(prefix), "-c", str(conf)]
    test = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
    if test.returncode != 0:
        raise RolloutFailed(f"nginx config invalid: {test.stderr[-1000:]}")
    if proxy_pid(folder) is not None:
        subprocess.run([*cmd, "-s", "reload"], check=True, capture_output=True)
    else:
        subprocess.run(cmd, check=True, capture_output=True)


def proxy_pid(folder: Path) -> int | None:
    pidfile = folder / "nginx" / "nginx.pid"
    if not pidfile.is_file():
        return None
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (ValueError, ProcessLookupError):
        return None


def stop_proxy(folder: Path) -> None:
    pid = proxy_pid(folder)
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)


def wait_proxy_serves(port: int, version: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=5)
            if info.status_code == 200 and info.json()["model_version"] == version:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RolloutFailed(f"the stable endpoint :{port} does not serve v{version} after the switch")


# -- Prefect tasks -------------------------------------------------------------------------------
class RolloutResult(BaseModel):
    dataset: str
    endpoint: str
    model_version: str
    previous_version: str | None
    backend: Backend
    switched: bool


@task(name="start-backend", **UNCACHED)
def start_backend_task(
    kind: Kind, artifact: str, model_version: str, env: dict[str, str], log_dir: Path, resources=None
) -> Backend:
    limits = container_limits(resources.cpus, resources.memory) if resources is not None else {}
    backend = start_backend(kind, artifact, model_version, env, log_dir, limits)
    get_run_logger().info("started %s backend %s on :%d (v%s)", kind, backend.ident[:12], backend.port, model_version)
    return backend


@task(name="wait-ready", **UNCACHED | {"retries": 0})
def wait_ready_task(backend: Backend, timeout: float) -> None:
    wait_ready(backend, timeout)


@task(name="smoke-test", **UNCACHED | {"retries": 0})
def smoke_test_task(backend: Backend, records: list[dict], expected: list[float]) -> None:
    smoke_test(backend, records, np.asarray(expected))


@task(name="switch-endpoint", **UNCACHED | {"retries": 0})
def switch_task(workdir: Path, dataset: str, port: int, backend: Backend) -> ServingState:
    folder = state_dir(workdir, dataset, port)
    point_proxy(folder, port, backend.port)
    wait_proxy_serves(port, backend.model_version)
    state = ServingState(port=port, live=backend)
    write_state(workdir, dataset, state)
    return state


@task(name="retire-backend", **UNCACHED)
def retire_task(backend: Backend | None) -> None:
    if backend is not None:
        stop_backend(backend)


@task(name="smoke-rows", **UNCACHED)
def smoke_rows_task(cfg, model_version: str, n: int) -> tuple[list[dict], list[float]]:
    """Rows of the model's own test split and the model's offline probabilities for them."""
    from tasks.data import read_split
    from tasks.registry import load_model, version_manifest

    model = load_model(cfg, f"models:/{cfg.model_name}/{model_version}")
    rows = read_split(version_manifest(cfg, model_version), "test").select(model.spec.base_features).head(n)
    return rows.to_dicts(), model.predict_proba(rows).tolist()


@task(name="abort-rollout", **UNCACHED)
def abort_task(cfg, dataset: str, backend: Backend | None, model_version: str, reason: str) -> str:
    """Remove the new backend, keep the old one serving, and put `champion` back if it had moved."""
    from tasks.registry import CHAMPION, PREVIOUS, rollback, version_by_alias

    logger = get_run_logger()
    if backend is not None:
        stop_backend(backend)
    champion, previous = version_by_alias(cfg, CHAMPION), version_by_alias(cfg, PREVIOUS)
    note = f"roll-out of v{model_version} failed: {reason}"
    if champion is not None and champion.version == model_version and previous is not None:
        rollback(cfg)
        note += f"; champion alias back on v{previous.version}"
    logger.error(note)
    emit_model_event(ROLLOUT_ROLLED_BACK, dataset, {"model_version": model_version, "reason": note[:2000]})
    return note
