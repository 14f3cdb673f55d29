"""Prefect Block types for what users change per environment: where models are tracked,
where they serve, when a batch counts as drift. Edit them in the Prefect UI or CLI; flows
load them by name (the dataset's name, dashes for underscores) and fall back to the
dataset config when none is saved, so nothing here needs a server.

`prefect block register -m blocks` registers the types; `python -m deployments.bootstrap`
saves default documents. Of the project's own, this package imports only the pure core
(the drift policy's fields are the config's `DriftPolicy`, declared once).
"""

from blocks.lifecycle import DriftPolicySettings, RolloutSettings, ServingTarget, TrackingSettings, block_name

__all__ = ["DriftPolicySettings", "RolloutSettings", "ServingTarget", "TrackingSettings", "block_name"]
