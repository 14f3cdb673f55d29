"""Alerts as code: Prefect automations that send a notification through the webhook block
`lifecycle-alerts` when a deployment's flow run fails, drift is detected, a challenger is
promoted, or a roll-out is rolled back. (The drift → retrain automation is the trigger in
prefect.yaml.)"""

from __future__ import annotations

from uuid import UUID

from prefect.automations import Automation
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

ALERT_BLOCK = "lifecycle-alerts"
MODEL = {"prefect.resource.id": "model.*"}

# name → (trigger fields, subject, body). Notification bodies are Jinja templates over the event.
ALERTS: dict[str, tuple[dict, str, str]] = {
    "alert-flow-run-failed": (
        # one alert per failed *deployment* run: its failed subflows carry no deployment
        dict(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment"},
        ),
        "Flow run {{ flow_run.name }} {{ flow_run.state.name }}",
        "Flow run {{ flow_run.name }} ({{ flow_run.id }}) of deployment {{ deployment.name }} ended "
        "{{ flow_run.state.name }}: {{ flow_run.state.message }}",
    ),
    "alert-drift-detected": (
        dict(expect={"model.drift.detected"}, match=MODEL),
        "Drift on {{ event.resource['prefect.resource.name'] }}",
        "v{{ event.payload.model_version }}: {{ event.payload.reasons }}; batch {{ event.payload.batch }}; "
        "report {{ event.payload.report }}",
    ),
    "alert-model-promoted": (
        dict(expect={"model.promoted"}, match=MODEL),
        "{{ event.payload.model_name }} v{{ event.payload.version }} promoted to champion",
        "previous champion: v{{ event.payload.previous_version }}; run {{ event.payload.run_id }}",
    ),
    "alert-rollout-rolled-back": (
        dict(expect={"model.rollout.rolled_back"}, match=MODEL),
        "Roll-out of {{ event.resource['prefect.resource.name'] }} v{{ event.payload.model_version }} rolled back",
        "{{ event.payload.reason }}",
    ),
    "alert-kpi-missed": (
        dict(expect={"model.kpi.missed"}, match=MODEL),
        "Success criteria missed on {{ event.resource['prefect.resource.name'] }}: {{ event.payload.missed }}",
        "{% for f in event.payload.figures %}{{ f.what }}: {{ f.value }} (target {{ f.target }}; {{ f.detail }})\n"
        "{% endfor %}",
    ),
}


def apply(block_document_id: UUID) -> list[str]:
    """Create the alert automations, replacing any of the same name (idempotent)."""

    names = []
    for name, (trigger, subject, body) in ALERTS.items():
        while True:
            try:
                Automation.read(name=name).delete()
            except ValueError:  # none (left) of that name
                break
        Automation(
            name=name,
            description=subject,
            trigger=EventTrigger(posture=Posture.Reactive, threshold=1, within=0, **trigger),
            actions=[SendNotification(block_document_id=block_document_id, subject=subject, body=body)],
        ).create()
        names.append(name)
    return names
