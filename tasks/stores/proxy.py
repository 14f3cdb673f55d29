"""The stable endpoint: a small nginx (Debian's `nginx-light`) on a fixed loopback port that
proxies to the live back-end; a switch rewrites its upstream and reloads it gracefully, so
clients keep the same address and in-flight requests finish."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tasks.stores.backends import RolloutFailed

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
