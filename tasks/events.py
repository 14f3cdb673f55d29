"""The Prefect events the lifecycle emits about a model; automations react to them
(the drift → retrain trigger in prefect.yaml, the alerts in deployments/automations.py)."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

DRIFT_DETECTED = "model.drift.detected"
MODEL_PROMOTED = "model.promoted"
ROLLOUT_ROLLED_BACK = "model.rollout.rolled_back"
KPI_MISSED = "model.kpi.missed"


def model_resource(dataset: str) -> dict[str, str]:
    return {"prefect.resource.id": f"model.{dataset}", "prefect.resource.name": dataset}


def emit_model_event(event: str, dataset: str, payload: dict[str, Any]) -> str | None:
    """Emit `event` about the dataset's model; returns the event id (None when events are off)."""

    sent = emit_event(event=event, resource=model_resource(dataset), payload=payload)
    return str(sent.id) if sent else None
