"""The stable endpoint: a small nginx (Debian's `nginx-light`) on a fixed loopback port that
proxies to the live back-end; a switch rewrites its upstream and reloads it gracefully, so
clients keep the same address and in-flight requests finish. With a `Lock`, nginx itself
answers 401 to a request without the expected credentials (only the open paths pass), so the
lock holds whatever the back-end checks; its config file then holds the secret and is 0600."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
from pydantic import BaseModel, Field, SecretStr

from tasks.core.errors import SettingsError
from tasks.stores.backends import RolloutFailed, key_headers

# The service's unauthenticated probes (the roll-out's readiness check uses /readyz).
SERVICE_OPEN_PATHS = ("/readyz", "/livez", "/healthz")
# RFC 6750 b64token characters: nothing nginx's config language or a header would reinterpret.
_CHARS = r"[A-Za-z0-9._~+/=-]"
_KEY = re.compile(_CHARS + "{16,}")
_HEADER = re.compile(rf"(Bearer |Basic ){_CHARS}+")


class Lock(BaseModel):
    """What a locked endpoint accepts: one exact `Authorization` value, optionally an `x-api-key`."""

    authorization: SecretStr
    api_key: SecretStr | None = None
    challenge: str  # the WWW-Authenticate answer to a 401
    open_paths: tuple[str, ...] = ()

    @classmethod
    def bearer(cls, key: SecretStr, open_paths: tuple[str, ...] = SERVICE_OPEN_PATHS) -> Lock:
        """`Authorization: Bearer <key>` or `x-api-key: <key>`."""
        if not _KEY.fullmatch(key.get_secret_value()):
            raise SettingsError("an API key needs 16 or more of the characters A-Z a-z 0-9 . _ ~ + / = -")
        return cls(authorization=SecretStr(f"Bearer {key.get_secret_value()}"), api_key=key,
                   challenge='Bearer realm="lifecycle"', open_paths=open_paths)  # fmt: skip

    @classmethod
    def basic(cls, user: str, password: SecretStr, realm: str, open_paths: tuple[str, ...] = ()) -> Lock:
        """HTTP basic auth for one user (what browsers and MLflow's client send)."""
        pair = base64.b64encode(f"{user}:{password.get_secret_value()}".encode()).decode()
        return cls(authorization=SecretStr(f"Basic {pair}"), challenge=f'Basic realm="{realm}"', open_paths=open_paths)


class Route(BaseModel):
    """Where the stable endpoint sends requests: the live back-end, optionally a canary answering a
    share of them (sticky on a header's value, if named), or a shadow getting a mirrored copy of the
    scoring requests (its answers dropped). With `access_log`, nginx writes a JSON line per answer
    (time, status, back-end, seconds): the guardrails' record of what each version served."""

    live: int
    canary: int | None = None
    percent: float = Field(default=0, ge=0, lt=100)
    sticky_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,64}$")
    shadow: int | None = None
    access_log: Path | None = None


SCORING_PATHS = ("/predict", "/predict_batched")  # what a shadow is sent (never /feedback: labels once)
SHADOW_LOCATION = "/_lifecycle_shadow"

PROXY = """      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header x-request-id $lifecycle_request_id;
      proxy_read_timeout 300s;
"""

NGINX_CONF = """worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_max_body_size 512m;
  # idle upstream connections close before uvicorn's 5 s keep-alive does (no reuse of a closed one)
{upstreams}  # the client's request id, else nginx's own: the same id reaches every back-end
  map $http_x_request_id $lifecycle_request_id {{ "" $request_id; default $http_x_request_id; }}
{maps}  server {{
    listen 127.0.0.1:{port};
{log}{locations}  }}
}}
"""

UPSTREAM = "  upstream {name} {{ server 127.0.0.1:{port}; keepalive 32; keepalive_timeout 4s; }}\n"

LOG_FORMAT = (
    '  log_format lifecycle escape=json \'{"t":$msec,"status":$status,"upstream":"$upstream_addr",'
    '"rt":$request_time,"urt":"$upstream_response_time"}\';\n'
    '  map "$request_method:$request_uri" $lifecycle_logged { "~^POST:/model_info" 0; "~^POST:" 1; default 0; }\n'
)
ACCESS_LOG = """    log_subrequest on;
    access_log {path} lifecycle if=$lifecycle_logged buffer=32k flush=1s;
"""

SHADOW = """    location = {location} {{
      internal;
      proxy_pass http://shadow$request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header x-request-id $lifecycle_request_id;
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
    }}
"""

LOCK_MAPS = """  map $http_authorization $lifecycle_authorized {{ default 0; "{authorization}" 1; }}
  map $http_x_api_key $lifecycle_key {{ default 0; {api_key} }}
  map "$lifecycle_authorized$lifecycle_key" $lifecycle_denied {{ default 0; "00" 1; }}
  map $lifecycle_denied $lifecycle_challenge {{ default ""; 1 '{challenge}'; }}
"""

LOCK_CHECK = """      add_header WWW-Authenticate $lifecycle_challenge always;
      if ($lifecycle_denied) {{ return 401 '{{"detail":"missing or wrong credentials"}}\\n'; }}
"""


def nginx_conf(prefix: Path, port: int, route: Route | int, lock: Lock | None = None) -> str:
    route = route if isinstance(route, Route) else Route(live=route)
    backends = {"live": route.live, "canary": route.canary, "shadow": route.shadow}
    upstreams = "".join(UPSTREAM.format(name=n, port=p) for n, p in backends.items() if p is not None)
    maps, check, upstream = "", "", "live"
    if route.canary is not None:
        key = "$request_id"
        if route.sticky_header:
            header = "$http_" + route.sticky_header.lower().replace("-", "_")
            maps += f'  map {header} $lifecycle_split_key {{ "" $request_id; default {header}; }}\n'
            key = "$lifecycle_split_key"
        maps += f'  split_clients "{key}" $lifecycle_upstream {{ {route.percent:g}% canary; * live; }}\n'
        upstream = "$lifecycle_upstream"
    if lock is not None:
        key = lock.api_key.get_secret_value() if lock.api_key is not None else None
        maps += LOCK_MAPS.format(
            authorization=_literal(lock.authorization.get_secret_value()),
            api_key=f'"{_literal(key)}" 1;' if key else "",
            challenge=lock.challenge,
        )
        check = LOCK_CHECK.format()
    proxy = PROXY.format(upstream=upstream)
    locations = "".join(f"    location = {path} {{\n{proxy}    }}\n" for path in (lock.open_paths if lock else ()))
    if route.shadow is not None:
        mirror = f"      mirror {SHADOW_LOCATION};\n      mirror_request_body on;\n"
        paths = "|".join(p.lstrip("/") for p in SCORING_PATHS)
        locations += f"    location ~ ^/({paths})$ {{\n{check}{mirror}{proxy}    }}\n"
        locations += SHADOW.format(location=SHADOW_LOCATION)
    locations += f"    location / {{\n{check}{proxy}    }}\n"
    log = ""
    if route.access_log is not None:
        maps += LOG_FORMAT
        log = ACCESS_LOG.format(path=route.access_log)
    return NGINX_CONF.format(prefix=prefix, port=port, upstreams=upstreams, maps=maps, log=log, locations=locations)


def _literal(value: str) -> str:
    """A case-sensitive, exact nginx `map` match (plain map strings match case-insensitively)."""
    if not (_HEADER.fullmatch(value) or _KEY.fullmatch(value)):
        raise SettingsError("credentials with characters nginx would reinterpret")
    return "~^" + re.sub(r"([^A-Za-z0-9])", r"\\\1", value) + "$"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise RolloutFailed("the stable endpoint needs nginx (Debian: apt-get install -y nginx-light)")
    return found


def _write_private(path: Path, text: str) -> None:
    """Owner-only from the first byte (a locked config holds the credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


def point_proxy(folder: Path, port: int, route: Route | int, lock: Lock | None = None) -> None:
    """Start the proxy on `port`, or give it a new route (a back-end port, a canary, a shadow) and
    set or lift its lock, with a graceful reload."""
    prefix = folder / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    _write_private(conf, nginx_conf(prefix, port, route, lock))
    cmd = [nginx_binary(), "-p", str(prefix), "-c", str(conf)]
    test = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
    if test.returncode != 0:
        raise RolloutFailed(f"nginx config invalid: {test.stderr[-1000:]}")
    if (master := proxy_pid(folder)) is not None:
        # the workers this reload retires, named before it: a worker titles itself "shutting down"
        # only once it has handled the master's signal, a moment a busy machine can stretch
        retiring = {w.pid for w in _workers(master) if _is_worker(w)} | set(_retiring(folder))
        (prefix / "retiring.json").write_text(json.dumps(sorted(retiring)))
        subprocess.run([*cmd, "-s", "reload"], check=True, capture_output=True)
    else:
        (prefix / "retiring.json").unlink(missing_ok=True)  # a former master's
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


def wait_proxy_serves(port: int, version: str, timeout: float = 15, api_key: SecretStr | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, headers=key_headers(api_key), timeout=5)
            if info.status_code == 200 and info.json()["model_version"] == version:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RolloutFailed(f"the stable endpoint :{port} does not serve v{version} after the switch")


class AccessLog:
    """The JSON lines nginx appends for a route with `access_log`, read from where the last read
    stopped (whole lines only): (back-end port, status, milliseconds) per answer."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[tuple[int, int, float]]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        answers = []
        for line in chunk[:end].splitlines():
            entry = json.loads(line)
            upstream = entry["upstream"].split(",")[-1].strip()  # "-": nginx answered itself (401, 413)
            if ":" not in upstream:
                continue
            seconds = entry["urt"].split(",")[-1].strip()
            ms = 1000 * (float(seconds) if seconds not in ("", "-") else float(entry["rt"]))
            answers.append((int(upstream.rsplit(":", 1)[1]), int(entry["status"]), ms))
        return answers


def wait_drained(folder: Path, timeout: float = 30) -> bool:
    """Wait until the proxy's workers from before its last reload have exited (they finish their
    in-flight requests and drop their idle connections to the old back-ends first): only then can
    a back-end they used stop without resetting a request. False if some are still there."""
    master = proxy_pid(folder)
    deadline = time.monotonic() + timeout
    while master is not None and time.monotonic() < deadline:
        if not _retiring(folder):
            return True
        time.sleep(0.1)
    return master is None


def _retiring(folder: Path) -> list[int]:
    """The workers retired by the proxy's reloads that still run."""
    path = folder / "nginx" / "retiring.json"
    master = proxy_pid(folder)
    if master is None or not path.is_file():
        return []
    alive = {w.pid for w in _workers(master)}
    return [pid for pid in json.loads(path.read_text()) if pid in alive]


def _workers(master: int) -> list[psutil.Process]:
    try:
        return psutil.Process(master).children()
    except psutil.NoSuchProcess:  # the proxy stopped: nothing left to drain
        return []


def _is_worker(process: psutil.Process) -> bool:
    try:
        return "worker process" in " ".join(process.cmdline())
    except psutil.Error:  # exited meanwhile
        return False
