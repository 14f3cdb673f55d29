"""Retraining: a fresh snapshot from the drifted champion's data plus new labelled rows — what it
served in a window, joined with the labels that arrived (the loop on live traffic), or a labelled
batch handed in — the guard against stale drift events, the endpoints to roll out to, the
recorded decision with the gate's figures.

The fresh snapshot keeps every reference row in the split it had, so the champion has
never trained on the fresh test rows (its old test rows plus the batch's share): the
challenger and the champion are compared on rows neither has seen. The data version is
the content hash, so a retried or repeated retrain finds the same snapshot, the same
MLflow run and the same registry version instead of new ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.common import UNCACHED, artifact_key
from tasks.core.cast import clean
from tasks.core.errors import DataError
from tasks.core.features import add_features
from tasks.core.feedback import ServedWindow
from tasks.core.prepare import (
    SPLIT_COLUMN,
    SPLITS,
    QuarantineReport,
    assign_splits,
    check_tolerance,
    copies_together,
    frame_digest,
    split_quarantine,
    top_failing_checks,
)
from tasks.core.schema import find_failures
from tasks.core.spec import DatasetSpec, DriftPolicy, RetrainingSpec
from tasks.core.task.kinds import task_of
from tasks.monitor import read_batch
from tasks.results import EvaluationResult, PackageResult, RegisterResult, RetrainResult, RolloutResult
from tasks.stores.backends import read_state
from tasks.stores.registry import (
    CHAMPION,
    TrackingConfig,
    VersionInfo,
    set_version_tags,
    version_by_alias,
    version_manifest,
    versions,
)
from tasks.stores.served import labelled_window, window_ending_now
from tasks.stores.snapshots import SourceFingerprint, load_manifest, read_split, write_snapshot
from tasks.stores.workdir import Workdir


class FreshSnapshot(BaseModel):
    """What a retrain will train on, or why it will not train."""

    base_version: str
    base_data_version: str
    source: str  # the batch file, or the served window
    rows_batch: int
    rows_unlabelled: int
    rows_quarantined: int
    rows_new: int
    rows_reference: int
    data_version: str | None = None
    manifest_path: str | None = None
    skip_reason: str | None = None


# -- pure ------------------------------------------------------------------------------------
def labelled_batch(
    raw: pl.DataFrame, spec: DatasetSpec, checked: list[str] | None = None
) -> tuple[pl.DataFrame, int, pl.DataFrame, pl.DataFrame]:
    """(valid labelled rows typed like a snapshot, unlabelled count, quarantined rows, failures).

    Retraining needs every input column the config declares; an empty label means
    "not labelled yet" (skipped, counted), any other bad value is quarantined. `checked`: the
    columns validated (default all; served rows may lack some, null by design)."""
    missing = [c for c in spec.input_columns if c not in raw.columns]
    if missing:
        raise DataError(f"retraining needs every input column of {spec.name!r}; the batch lacks {missing}")
    raw = raw.select(spec.input_columns)
    label = pl.col(spec.target.column).cast(pl.String).str.strip_chars()
    has_label = label.is_not_null() & (label != "")
    unlabelled = raw.filter(~has_label).height
    raw = raw.filter(has_label)
    failures = find_failures(raw, spec, checked)
    kept, quarantined = split_quarantine(raw, failures)
    return clean(kept, spec), unlabelled, quarantined, failures


def served_as_source(served: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, list[str]]:
    """Served rows (joined with their labels) in the source's layout, and the columns they really
    carry (a sensitive column is never an input column); without an event-time column of its own,
    a row's event time is when it was served."""
    present = [c for c in spec.input_columns if c in served.columns]
    extra = []
    if spec.event_time_column and spec.event_time_column not in served.columns:
        served_at = pl.from_epoch((pl.col("logged_at") * 1e6).cast(pl.Int64), time_unit="us")
        extra.append(served_at.alias(spec.event_time_column))
        present.append(spec.event_time_column)
    missing = [c for c in spec.input_columns if c not in present]
    frame = served.with_columns(*extra, *(pl.lit(None, pl.String).alias(c) for c in missing))
    return frame.select(spec.input_columns), present


def merge_for_retraining(
    reference: dict[str, pl.DataFrame], new_rows: pl.DataFrame, spec: DatasetSpec, policy: RetrainingSpec
) -> pl.DataFrame:
    """Reference rows keep their split; new rows are split by the config's rule, except a copy of a
    kept reference row, which takes that row's split (served traffic repeats rows: a copy on the other
    side would let validation reward memorising them); the window (`max_rows`) drops the oldest
    reference rows first. Returns rows with the split column."""
    new = assign_splits(add_features(new_rows, spec), spec)
    parts = [frame.with_columns(pl.lit(split).alias(SPLIT_COLUMN)) for split, frame in reference.items()]
    old = pl.concat(parts, how="vertical") if parts and policy.include_reference else new.clear()
    old = old.select(new.columns)
    if spec.event_time_column:
        old = old.sort(spec.event_time_column, maintain_order=True)
    if policy.max_rows is not None:
        room = max(policy.max_rows - new.height, 0)
        old = old.tail(room) if room else old.clear()
    return copies_together(pl.concat([old, new], how="vertical"))


def fresh_fingerprint(base_data_version: str, source: str, merged: pl.DataFrame) -> SourceFingerprint:
    return SourceFingerprint(
        location=f"retrain: snapshot {base_data_version} + {source}",
        sha256=frame_digest(merged),
        size_bytes=int(merged.estimated_size()),
    )


def stale_reason(base: VersionInfo, champion: VersionInfo | None, data_version: str | None) -> str | None:
    """None when this retrain may go on: the champion is still the version the drift was
    measured against, or it is this very retrain's model (an earlier attempt promoted it)."""
    if champion is None or champion.version == base.version:
        return None
    if data_version and champion.tags.get("lifecycle.data_version") == data_version:
        return None
    return (
        f"the champion moved from v{base.version} to v{champion.version} since the drift was detected: "
        "the drift was measured against a model that no longer serves (the next monitor run checks the batch "
        f"against v{champion.version})"
    )


def live_endpoints(workdir: Path, dataset: str) -> list[tuple[int, str, str]]:
    """(stable port, backend kind, live version) of every endpoint serving this dataset from `workdir`."""
    root = Workdir(workdir).serving(dataset)
    found = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        if folder.name.isdigit():
            state = read_state(workdir, dataset, int(folder.name))
            if state.live is not None:
                found.append((state.port, state.live.kind, state.live.model_version))
    return found


def gate_figures(evaluated: EvaluationResult, spec: DatasetSpec) -> dict[str, dict[str, float]]:
    """The gate metrics and the task's headline ones (those with intervals) of the challenger, the
    champion and the baselines, on the same test rows."""
    metrics = sorted({rule.metric for rule in spec.gate} | set(task_of(spec).bootstrapped))
    models = {"challenger": evaluated.candidate, **evaluated.baselines}
    if evaluated.champion and not evaluated.candidate_is_champion:
        models["champion"] = evaluated.champion
    return {name: {m: round(float(v[m]), 5) for m in metrics if m in v} for name, v in models.items()}


def figures_table(figures: dict[str, dict[str, float]]) -> str:
    if not figures:
        return ""
    metrics = sorted({m for f in figures.values() for m in f})
    head = f"\n| model | {' | '.join(metrics)} |\n|---|{'---|' * len(metrics)}\n"
    return head + "".join(f"| {n} | {' | '.join(str(f.get(m, '-')) for m in metrics)} |\n" for n, f in figures.items())


# -- Prefect tasks ------------------------------------------------------------------------------
@task(name="base-version", **UNCACHED)
def base_version_task(cfg: TrackingConfig, version: str | None) -> VersionInfo:
    """The version the drift was measured against (default: the current champion)."""

    if version:
        found = [v for v in versions(cfg) if v.version == str(version)]
        if not found:
            raise LookupError(f"{cfg.model_name} has no version {version}")
        return found[0]
    champion = version_by_alias(cfg, CHAMPION)
    if champion is None:
        raise LookupError(f"{cfg.model_name} has no champion: run the lifecycle first")
    return champion


@task(name="fresh-snapshot", **UNCACHED)
def fresh_snapshot_task(
    cfg: TrackingConfig, spec: DatasetSpec, base: VersionInfo, source: Path | ServedWindow, workdir: Path
) -> FreshSnapshot:
    """Write the snapshot a retrain trains on (idempotent: same inputs → same data version)."""
    logger = get_run_logger()
    base_manifest = version_manifest(cfg, base.version)
    base_data_version = load_manifest(base_manifest).data_version
    if isinstance(source, ServedWindow):
        described = f"served window of v{source.model_version}: {source.start.isoformat()} → {source.end.isoformat()}"
        served = labelled_window(Workdir(workdir), spec, source)
        if served.is_empty():  # nothing served in the window: no rows of the source's layout
            raw, checked = pl.DataFrame(schema=dict.fromkeys(spec.input_columns, pl.String)), None
        else:
            raw, checked = served_as_source(served, spec)
    else:
        described, raw, checked = str(Path(source).resolve()), read_batch(source), None
    new_rows, unlabelled, quarantined, failures = labelled_batch(raw, spec, checked)
    counts = dict(
        base_version=base.version,
        base_data_version=base_data_version,
        source=described,
        rows_batch=raw.height,
        rows_unlabelled=unlabelled,
        rows_quarantined=quarantined.height,
        rows_new=new_rows.height,
    )
    policy = spec.retraining
    if new_rows.height < policy.min_labelled_rows:
        reason = f"{new_rows.height} labelled valid rows < {policy.min_labelled_rows} (retraining policy)"
        logger.warning("no retraining: %s", reason)
        return FreshSnapshot(**counts, rows_reference=0, skip_reason=reason)
    reference = {split: read_split(base_manifest, split) for split in SPLITS}
    merged = merge_for_retraining(reference, new_rows, spec, policy)
    fingerprint = fresh_fingerprint(base_data_version, described, merged)
    where = Workdir(workdir).quarantine(spec.name, f"retrain-{fingerprint.sha256[:16]}")
    where.parent.mkdir(parents=True, exist_ok=True)
    quarantined.write_parquet(where)
    report = QuarantineReport(
        path=str(where),
        rows_in=raw.height - unlabelled,
        rows_quarantined=quarantined.height,
        max_fraction=spec.quarantine.max_fraction,
        top_checks=top_failing_checks(failures),
    )
    check_tolerance(report)
    manifest, path = write_snapshot(merged, spec, fingerprint, report, workdir)
    logger.info(
        "fresh snapshot %s: %d reference rows of v%s + %d new rows (%d unlabelled, %d quarantined) from %s",
        manifest.data_version, merged.height - new_rows.height, base.version, new_rows.height, unlabelled,
        quarantined.height, described,
    )  # fmt: skip
    return FreshSnapshot(
        **counts,
        rows_reference=merged.height - new_rows.height,
        data_version=manifest.data_version,
        manifest_path=str(path),
    )


@task(name="retrain-window", **UNCACHED)
def window_task(spec: DatasetSpec, base: VersionInfo, policy: DriftPolicy, workdir: Path) -> ServedWindow:
    """The base version's served window ending now (a retrain started by hand, with no batch)."""
    return window_ending_now(Workdir(workdir).prediction_log(spec.name), base.version, policy.window)


@task(name="check-stale", **UNCACHED)
def stale_task(cfg: TrackingConfig, base: VersionInfo, fresh: FreshSnapshot) -> str | None:
    return stale_reason(base, version_by_alias(cfg, CHAMPION), fresh.data_version)


@task(name="endpoints-to-update", **UNCACHED)
def endpoints_task(
    cfg: TrackingConfig, workdir: Path, dataset: str, target: str, port: int | None
) -> list[tuple[str, int]]:
    """(kind, port) of each stable endpoint that does not serve the champion yet.

    `target: none` rolls out nowhere; a `port` names one endpoint (kind `target`, or
    docker for `auto`); otherwise every live endpoint of this dataset under `workdir`."""
    if target == "none":
        return []
    champion = version_by_alias(cfg, CHAMPION)
    if port is not None:
        live = {p: v for p, _, v in live_endpoints(workdir, dataset)}
        kind = "docker" if target == "auto" else target
        return [] if champion and live.get(port) == champion.version else [(kind, port)]
    return [
        (kind if target == "auto" else target, p)
        for p, kind, version in live_endpoints(workdir, dataset)
        if champion is None or version != champion.version
    ]


@task(name="record-retrain", **UNCACHED)
def record_task(
    cfg: TrackingConfig,
    spec: DatasetSpec,
    fresh: FreshSnapshot,
    reason: str,
    stale: str | None = None,
    evaluated: EvaluationResult | None = None,
    registered: RegisterResult | None = None,
    served: list[RolloutResult] | None = None,
    packaged: PackageResult | None = None,
) -> RetrainResult:
    """The decision, why, the gate's figures and what serves now: a Prefect artifact, registry tags."""

    champion = version_by_alias(cfg, CHAMPION)
    served_versions = [f"{r.endpoint} → v{r.model_version}" for r in served or []]
    if fresh.skip_reason:
        status, reasons = "skipped", [fresh.skip_reason]
    elif stale:
        status, reasons = "stale", [stale]
    elif registered is not None and champion is not None and champion.version == registered.version:
        status, reasons = "promoted", [registered.reason]
    else:
        status, reasons = "kept", [registered.reason if registered else "no challenger"]
    result = RetrainResult(
        dataset=spec.name,
        status=status,
        reasons=reasons,
        base_version=fresh.base_version,
        champion_version=champion.version if champion else None,
        challenger_version=registered.version if registered else None,
        data_version=fresh.data_version,
        source=fresh.source,
        rows_new=fresh.rows_new,
        gate=evaluated.gate if evaluated else None,
        figures=gate_figures(evaluated, spec) if evaluated else {},
        served=served_versions,
        bento=packaged.bento_tag if packaged else None,
    )
    if registered is not None:
        set_version_tags(
            cfg,
            registered.version,
            {"retrained_from": fresh.base_version, "retrain_trigger": reason[:500], "retrain_source": fresh.source},
        )
    summary = "; ".join(reasons)
    get_run_logger().info("retrain of %s: %s — %s", spec.name, status, summary)
    digest = hashlib.sha256(fresh.source.encode()).hexdigest()[:8]
    create_markdown_artifact(
        key=f"{artifact_key(spec.name)}-retrain",
        description=f"retrain decision for new rows {digest}",
        markdown=f"### Retrain: **{status}** (champion v{result.champion_version})\n\n"
        f"- trigger: {reason or 'manual'}\n- drift measured against: v{fresh.base_version}\n"
        f"- new rows: {fresh.source}: {fresh.rows_new} labelled, {fresh.rows_unlabelled} unlabelled, "
        f"{fresh.rows_quarantined} quarantined\n"
        f"- fresh snapshot: `{fresh.data_version}` ({fresh.rows_reference} reference + {fresh.rows_new} new rows)\n"
        f"- challenger: v{result.challenger_version}\n- why: {summary}\n"
        f"- serving: {', '.join(served_versions) or 'no endpoint updated'}"
        + (f"; packaged `{result.bento}` for `make serve`" if result.bento else "")
        + "\n"
        + figures_table(result.figures),
    )
    return result
