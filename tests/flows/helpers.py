from __future__ import annotations

import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId


def task_states(flow_run_id, timeout: float = 30) -> dict[str, str]:
    """Task name → state name of one flow run (e.g. {'ingest': 'Cached'}). Task run states reach
    the API as events, so on a busy machine a run may have none yet for a moment: wait for all."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
        if all(run.state is not None for run in runs) or time.monotonic() > deadline:
            return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}
        time.sleep(0.5)


def child_flow_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )


def artifacts_of(flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in arts}
