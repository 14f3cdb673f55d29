"""The stack's lock on its UIs: with LIFECYCLE_STACK_PASSWORD set, `deployments/stack.sh up` runs
`mlflow ui` and `evidently ui` on private loopback ports and this puts the nginx of the stable
endpoint (`tasks.stores.proxy`) in front of each on its public port with HTTP basic auth for
`admin` — what browsers and MLflow's client (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)
send. Only each UI's health path stays open. The password is read from the environment, never
from argv.

    python -m deployments.locks front --ui mlflow --folder DIR --port 5000 --backend 5001
    python -m deployments.locks stop --folder DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from tasks.stores.proxy import Lock, point_proxy, stop_proxy

PASSWORD_ENV = "LIFECYCLE_STACK_PASSWORD"
USER = "admin"
UIS = {"mlflow": ("MLflow", "/health"), "evidently": ("Evidently", "/api/version")}  # realm, open path


def ui_lock(ui: str, password: SecretStr) -> Lock:
    realm, health = UIS[ui]
    return Lock.basic(USER, password, realm=realm, open_paths=(health,))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.locks", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["front", "stop"])
    parser.add_argument("--ui", choices=sorted(UIS), help="the UI behind the front")
    parser.add_argument("--folder", type=Path, required=True, help="the front's nginx prefix lives here")
    parser.add_argument("--port", type=int, help="the locked port (MLFLOW_PORT, EVIDENTLY_PORT)")
    parser.add_argument("--backend", type=int, help="the private port the UI listens on")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop_proxy(args.folder)
        return
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        sys.exit(f"{PASSWORD_ENV} is not set: nothing to lock the {args.ui} UI with")
    if args.ui is None or args.port is None or args.backend is None:
        parser.error("front needs --ui, --port and --backend")
    point_proxy(args.folder, args.port, args.backend, ui_lock(args.ui, SecretStr(password)))


if __name__ == "__main__":
    main()
