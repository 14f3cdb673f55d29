"""Run any flow from the shell: `python -m flows.<phase> --help`.

Options come from the flow's own parameter schema (names, defaults and the
docstring's descriptions). The last line of stdout is the result as JSON.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

# Prefect's temporary API gives itself 20 s to start; creating and migrating a new ~/.prefect
# database takes 25-42 s on a new or busy 2-core machine.
EPHEMERAL_STARTUP_TIMEOUT_SECONDS = 180


@contextmanager
def local_defaults() -> Iterator[None]:
    """Run flows on one machine quietly and patiently: a start-up limit for Prefect's temporary API
    that holds on a new or busy machine, and no telemetry (no network here to send it to). What
    the user has set (environment, Prefect profile) wins."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    with temporary_settings(
        set_defaults={
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
        }
    ):
        yield


def build_parser(flow: Flow) -> argparse.ArgumentParser:
    schema = flow.parameters
    parser = argparse.ArgumentParser(
        prog=f"python -m flows.{Path(inspect.getfile(flow.fn)).stem}",
        description=(flow.description or "").split("\n\n")[0],
    )
    for name, prop in schema.properties.items():
        default = prop.get("default")
        help_text = prop.get("description") or prop.get("title", name)
        if name not in schema.required:
            help_text += f" (default: {default})"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            required=name in schema.required,
            default=argparse.SUPPRESS,
            help=help_text,
            metavar=prop.get("type", "VALUE").upper() if isinstance(prop.get("type"), str) else "VALUE",
        )
    return parser


def _parse_value(text: str) -> Any:
    """JSON when it parses as an object or a list, else the text (the flow validates types)."""
    if text[:1] in "{[":
        return json.loads(text)
    return text


def run(flow: Flow, argv: list[str] | None = None) -> None:
    args = vars(build_parser(flow).parse_args(argv))
    params = {k: _parse_value(v) for k, v in args.items()}
    try:
        with local_defaults():
            result = flow(**params)
    except Exception as exc:  # the flow's own logs already hold the traceback
        print(json.dumps({"flow": flow.name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    body = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    print(json.dumps({"flow": flow.name, "ok": True, **body}, default=str), flush=True)
