"""Bootstrap a Prefect server for the lifecycle: register the block types, save default
block documents for each dataset config (never overwriting edited ones), and, given a
webhook URL, the `lifecycle-alerts` notification block and the alert automations.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.bootstrap \\
        --serving-kind process --alert-url http://127.0.0.1:9000/alerts

The webhook URL may carry a token: pass it with --alert-url or LIFECYCLE_ALERT_WEBHOOK_URL;
it is stored in the block (encrypted fields for secrets), never in the repository.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect.blocks.notifications import CustomWebhookNotificationBlock

from blocks import DriftPolicySettings, ServingTarget, TrackingSettings, block_name
from deployments.automations import ALERT_BLOCK, apply
from tasks.core.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def register_block_types() -> list[str]:
    from prefect_docker.credentials import DockerRegistryCredentials

    kinds = (TrackingSettings, ServingTarget, DriftPolicySettings, DockerRegistryCredentials)
    for cls in kinds:
        cls.register_type_and_schema()
    return [cls.get_block_type_slug() for cls in kinds]


def save_defaults(config: Path, serving_kind: str, port: int) -> list[str]:
    """Default documents for one dataset: the config's own values, shown (and editable) in the UI."""

    spec = load_spec(config)
    name = block_name(spec.name)
    documents = {
        TrackingSettings: TrackingSettings(experiment=spec.name, model_name=spec.registered_model_name),
        ServingTarget: ServingTarget(kind=serving_kind, port=port),
        DriftPolicySettings: DriftPolicySettings(**spec.monitoring.model_dump()),
    }
    saved = []
    for cls, document in documents.items():
        try:
            cls.load(name)
        except ValueError:
            document.save(name)
            saved.append(f"{cls.get_block_type_slug()}/{name}")
    return saved


def save_alert_block(url: str):

    block = CustomWebhookNotificationBlock(
        name=ALERT_BLOCK,
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    return block.save(ALERT_BLOCK, overwrite=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        nargs="*",
        type=Path,
        default=[p for p in sorted((ROOT / "configs").glob("*.yaml")) if not p.is_symlink()],
    )
    parser.add_argument("--serving-kind", choices=["process", "docker"], default="docker")
    parser.add_argument("--port", type=int, default=3000, help="stable endpoint port saved in ServingTarget")
    parser.add_argument("--alert-url", default=os.environ.get("LIFECYCLE_ALERT_WEBHOOK_URL"))
    args = parser.parse_args(argv)
    print("block types:", ", ".join(register_block_types()))
    for config in args.configs:
        saved = save_defaults(config, args.serving_kind, args.port)
        print(f"{config.name}: saved {', '.join(saved) or 'nothing (documents exist)'}")
    if args.alert_url:
        block_id = save_alert_block(args.alert_url)
        print("alerts:", ", ".join(apply(block_id)), f"→ block custom-webhook/{ALERT_BLOCK}")
    else:
        print("alerts: skipped (no --alert-url / LIFECYCLE_ALERT_WEBHOOK_URL)")


if __name__ == "__main__":
    main()
