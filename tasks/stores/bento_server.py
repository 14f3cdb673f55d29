"""`bentoml serve` with a Prometheus folder of its own.

Every `bentoml serve` empties `$BENTOML_HOME/prometheus_multiproc_dir` as it starts, so a second
server on the same machine (the next version in a roll-out, a canary, `make serve` beside a test)
wipes the first one's counters and its /metrics then reports the newcomer's. This launcher gives
each server a fresh folder and removes it when the server stops. It also starts the server with
`SERVER_ENV` (container back-ends get the same), and logs a worker that dies while the server runs
(BentoML's arbiter, circus, starts another without a word).

    python -m tasks.stores.bento_server <bento tag> --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

# Polars' allocator (jemalloc) with one arena: a worker's peak memory while it scores a 100k-row file
# is ~65 MB lower (measured: 716 vs 780 MiB for the arbiter and 2 workers), at the same speed.
SERVER_ENV = {"_RJEM_MALLOC_CONF": "narenas:1"}
logger = logging.getLogger("bentoml.lifecycle")  # printed by BentoML's handlers in the arbiter


def with_exit_log(create_watcher):
    """BentoML's circus-watcher factory, with circus' `after_reap` hook: a worker that exits while
    the server runs is logged as a WARNING naming its pid and how it ended."""

    def create(*args, **kwargs):
        return create_watcher(*args, hooks={"after_reap": (worker_exited, True)}, **kwargs)

    return create


def worker_exited(watcher, process_pid: int, exit_code: int | None = None, **_) -> bool:
    if watcher.is_active():  # not a stop the arbiter asked for
        killed = exit_code is not None and exit_code < 0
        how = f"killed by {signal.Signals(-exit_code).name}" if killed else f"exit code {exit_code}"
        logger.warning("worker pid %d of %s died (%s) while the server runs", process_pid, watcher.name, how)
    return True


def serve_command(target: str, host: str, port: int, python: str = sys.executable) -> list[str]:
    """The command that serves `target` (a bento tag or a service path) on host:port."""
    return [python, "-m", "tasks.stores.bento_server", target, "--host", host, "--port", str(port)]


def main(argv: list[str]) -> int:
    for name, value in SERVER_ENV.items():  # before anything allocates; the workers inherit it
        os.environ.setdefault(name, value)
    # BentoML's own testing plugin sets the folder the same way; the CLI has no option for it
    import bentoml.serving
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    # looked up by BentoML when it builds the server's watchers, which take no hooks otherwise
    bentoml.serving.create_watcher = with_exit_log(bentoml.serving.create_watcher)

    with tempfile.TemporaryDirectory(prefix="bentoml-prometheus-") as folder:
        BentoMLContainer.prometheus_multiproc_dir.set(str(Path(folder) / "metrics"))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the server, then the folder goes
            cli.main(["serve", *argv], prog_name="bentoml", standalone_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
