"""Run any flow from the shell: `python -m flows.<phase> --help`.

Options come from the flow's own parameter schema (names, defaults and the
docstring's descriptions). The last line of stdout is the result as JSON.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from prefect import Flow


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
        result = flow(**params)
    except Exception as exc:  # the flow's own logs already hold the traceback
        print(json.dumps({"flow": flow.name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    body = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    print(json.dumps({"flow": flow.name, "ok": True, **body}, default=str), flush=True)
