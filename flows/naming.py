"""Flow-run names that say what a run does, e.g. `train-<dataset>-<data version>`."""

from __future__ import annotations

from pathlib import Path

from prefect.runtime import flow_run


def named_after_config(phase: str):
    """`<phase>-<config stem>`."""

    def name() -> str:
        config = flow_run.parameters.get("config")
        return f"{phase}-{Path(str(config)).resolve().stem}" if config else phase  # a link names its target

    return name


def named_after_snapshot(phase: str):
    """`<phase>-<dataset>-<data version>`, read off the snapshot manifest path."""

    def name() -> str:
        manifest = flow_run.parameters.get("manifest_path")
        if not manifest:
            return named_after_config(phase)()
        folder = Path(str(manifest)).parent
        return f"{phase}-{folder.parent.name}-{folder.name}"

    return name


def named_after_run(phase: str):
    """`<phase>-<config stem>-<MLflow run id prefix>`."""

    def name() -> str:
        run_id = str(flow_run.parameters.get("run_id") or "")
        return f"{named_after_config(phase)()}-{run_id[:8]}".rstrip("-")

    return name
