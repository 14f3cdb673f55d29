"""What every lifecycle task shares: errors, cheap cache keys and the retry rule."""

from __future__ import annotations

import base64
import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

from prefect.cache_policies import NO_CACHE, TASK_SOURCE
from prefect.utilities.hashing import hash_objects

from tasks.core.errors import DataError


def content_key(task_ctx: Any, inputs: dict[str, Any]) -> str | None:
    """Cache key from the task's source and the *content tokens* of its inputs.

    Inputs with a `cache_token()` (a source fingerprint, a dataset spec, a snapshot
    manifest) contribute that token; small scalars contribute themselves; frames
    are skipped, because in our flows they are derived from a fingerprinted input.
    A task with no token-bearing input is not cached (returns None).
    """
    parts: list[Any] = []
    has_token = False
    for name in sorted(inputs):
        value = inputs[name]
        token = getattr(value, "cache_token", None)
        if callable(token):
            parts.append((name, token()))
            has_token = True
        elif value is None or isinstance(value, str | int | float | bool):
            parts.append((name, value))
        elif hasattr(value, "__fspath__"):
            parts.append((name, str(value)))
    if not has_token:
        return None
    return hash_objects(TASK_SOURCE.compute_key(task_ctx, inputs, {}), *parts)


PROJECT_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_revision(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Which code trained or evaluated: the checkout's commit and whether tracked files differ from
    it, or, outside a checkout (an image, an installed package), the package version."""
    try:
        git = ["git", "-C", str(root)]
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, check=True, timeout=30)  # fmt: skip
        return {"code_revision": sha.stdout.strip(), "code_dirty": str(bool(changed.stdout.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        try:
            version = importlib.metadata.version("tabular-lifecycle")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return {"code_revision": f"tabular-lifecycle {version}", "code_dirty": "unknown"}


def markdown_image(title: str, png: bytes) -> str:
    """A PNG inside a markdown artifact (the Prefect UI shows data URIs; no file server needed)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def table_row(row: dict) -> dict:
    """A row as a Prefect table artifact takes it: floats rounded to 4 places, NaN as empty."""
    return {k: (None if v != v else round(v, 4)) if isinstance(v, float) else v for k, v in row.items()}


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower())


def retry_unless_data_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures (I/O, network); never a broken data contract."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, DataError)


# Keyword arguments shared by the lifecycle's tasks.
CACHED = dict(
    cache_key_fn=content_key,
    persist_result=True,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_data_error,
)
UNCACHED = dict(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_data_error,
)
