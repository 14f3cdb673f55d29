"""Start a real `bentoml serve` on a free loopback port, and stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tasks.serving import free_port

BENTOML = str(Path(sys.executable).with_name("bentoml"))


def wait_until_ok(url: str, timeout: float, why_not, exited=lambda: None) -> None:
    """Poll `url` until it answers 200; on timeout, or when `exited()` returns an exit code,
    fail with `why_not()` (e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        if (code := exited()) is not None:
            raise RuntimeError(f"the server behind {url} exited {code}: {why_not()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s: {why_not()}")
        time.sleep(0.5)


@contextmanager
def bento_server(target: str, log_file: Path, env: dict | None = None, timeout: float = 180):
    """`target` is a bento tag (or service path); yields the base URL once /readyz answers 200."""
    port = free_port()
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            env=os.environ | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ok(f"{url}/readyz", timeout, lambda: log_file.read_text()[-3000:], proc.poll)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
