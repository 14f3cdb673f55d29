"""The main job: every lifecycle phase in order, each a subflow."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel

from flows.naming import named_after_config
from flows.prepare import PrepareResult, prepare


class LifecycleResult(BaseModel):
    prepare: PrepareResult


@flow(name="lifecycle", flow_run_name=named_after_config("lifecycle"))
def lifecycle(config: Path, source: str | None = None, workdir: Path = Path("artifacts")) -> LifecycleResult:
    """Take a table through the ML lifecycle: prepare → train → evaluate → register → package → roll out.

    Args:
        config: dataset config (YAML) describing the table
        source: read this file or database URI instead of the config's source
        workdir: folder for snapshots, quarantine files and reports
    """
    prepared = prepare(config=config, source=source, workdir=workdir)
    return LifecycleResult(prepare=prepared)


if __name__ == "__main__":
    from flows.cli import run

    run(lifecycle)
