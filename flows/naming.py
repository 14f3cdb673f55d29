"""Flow-run names that say what a run does, e.g. `prepare-telco_churn`."""

from __future__ import annotations

from pathlib import Path

from prefect.runtime import flow_run


def named_after_config(phase: str):
    def name() -> str:
        config = flow_run.parameters.get("config")
        return f"{phase}-{Path(str(config)).stem}" if config else phase

    return name
