"""Evaluation: test metrics of the candidate, the baselines and the champion on the same rows,
95% intervals, the decision on test rows (calibration, interval coverage), error analysis, group
fairness, cross-validation, explanations, plots and the model card. What a task kind measures
and shows is the task's (`tasks/core/task/`, over the pure `tasks/core/assessment.py`,
`tasks/core/plots.py` and `tasks/core/card.py`); the gate is `tasks/core/gate.py`. Functions
first, `@task` wrappers below."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.common import CACHED, UNCACHED, artifact_key, code_revision, markdown_image, table_row
from tasks.core import plots as drawings
from tasks.core.assessment import Assessment
from tasks.core.card import Column, figure, markdown_table
from tasks.core.compiled import compiled_for, max_abs_difference
from tasks.core.errors import ModelIntegrityError
from tasks.core.features import encode_target, feature_matrix
from tasks.core.gate import GateDecision, Metrics, apply_gate, compiled_parity_check, with_check
from tasks.core.spec import DatasetSpec
from tasks.core.task import Decision, Task
from tasks.core.task.kinds import task_of
from tasks.results import EvaluationResult, TrainResult
from tasks.stores import registry
from tasks.stores.registry import TrackingConfig
from tasks.stores.snapshots import SnapshotManifest, read_split
from tasks.train import base_params

# -- metrics --------------------------------------------------------------------------------


def latency(predict, rows: pl.DataFrame, repeats: int = 50) -> Metrics:
    """Prediction latency through the full model (types, features, booster).

    `latency_ms_per_row`: a batch of `rows` divided by its size (best of 3);
    `latency_ms_single_row`: median of single-row calls."""
    predict(rows.head(10))  # warm up
    batch = min(_timed(predict, rows) for _ in range(3))
    single = [_timed(predict, rows.slice(i % rows.height, 1)) for i in range(repeats)]
    return {
        "latency_ms_per_row": 1000.0 * batch / rows.height,
        "latency_ms_single_row": 1000.0 * float(np.median(single)),
    }


def _timed(fn, arg) -> float:
    started = time.perf_counter()
    fn(arg)
    return time.perf_counter() - started


def cross_validate(
    task: Task, x: np.ndarray, y: np.ndarray, params: dict, rounds: int, folds: int, categorical: list[int], seed: int
) -> Metrics:
    """k-fold `task.validation_metric` of the chosen configuration on the training split (the task's folds:
    stratified for classes), as `cv_<metric>_mean` and `cv_<metric>_std`."""
    import lightgbm as lgb  # lazy: only training and evaluation call it

    metric = task.metric_function(task.validation_metric)
    scores = []
    for fit_idx, hold_idx in task.cv_folds(y, folds, seed):
        data = lgb.Dataset(x[fit_idx], y[fit_idx], categorical_feature=categorical, params={"verbosity": -1})
        booster = lgb.train(params, data, num_boost_round=rounds)
        scores.append(metric(y[hold_idx], booster.predict(x[hold_idx])))
    name = f"cv_{task.validation_metric}"
    return {f"{name}_mean": float(np.mean(scores)), f"{name}_std": float(np.std(scores))}


def explain_sample(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """At most `rows` rows of `x`, drawn with a seed. TreeSHAP costs ~1 ms per row here, while
    the mean |SHAP| ranking settles after a few thousand rows."""
    if len(x) <= rows:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]


def shap_values(booster, x: np.ndarray) -> np.ndarray:
    """Per-row SHAP contributions from LightGBM's own `pred_contrib` (last column, the bias, dropped),
    in the booster's raw output: log-odds for a probability, the target's units for a value."""
    return booster.predict(x, pred_contrib=True)[:, :-1]


def global_importance(booster, contributions: np.ndarray, names: list[str]) -> list[dict]:
    gain = booster.feature_importance(importance_type="gain")
    mean_abs = np.abs(contributions).mean(axis=0)
    order = np.argsort(-mean_abs)
    return [{"feature": names[i], "mean_abs_shap": float(mean_abs[i]), "gain": float(gain[i])} for i in order]


# -- plots ---------------------------------------------------------------------------------
def save_plots(
    folder: Path,
    task: Task,
    y: np.ndarray,
    scores: np.ndarray,
    decision: Decision,
    importance: list[dict],
    contributions: np.ndarray,
    x: np.ndarray,
    names: list[str],
) -> list[Path]:
    """The task's plots of the test rows (binary: ROC, PR, calibration, confusion matrix; regression:
    predicted vs actual, residuals), feature importance and the SHAP summary (PNG)."""
    explained = drawings.explanation_plots(importance, contributions, x, names, task.card.contribution_units)
    return drawings.save(folder, task.plots(y, scores, decision) | explained)


# -- model card ------------------------------------------------------------------------------
NO_GROUPS = "no group of enough rows"
KEY = (Column("column", "column", ""), Column("value", "value", ""))  # a slice's first columns


def assessment_sections(task: Task, candidate: Metrics, assessment: Assessment, errors: list[dict],
                        top: int = 10) -> str:  # fmt: skip
    """The model card's uncertainty, decision (calibration, intervals), error-analysis and fairness sections."""
    intervals = "".join(
        f"| {m} | {figure(candidate.get(m))} | [{figure(candidate.get(f'{m}_ci_low'))}, "
        f"{figure(candidate.get(f'{m}_ci_high'))}] |\n"
        for m in task.bootstrapped
    )
    text = f"""## Uncertainty (95% bootstrap intervals over the test rows)
| metric | value | interval |
|---|---|---|
{intervals}
{task.decision_section(candidate, assessment)}
## {task.card.error_heading}
{markdown_table(task.card.errors, errors[:top], NO_GROUPS)}"""
    for column, groups in assessment.fairness.items():
        text += f"""
## {task.card.fairness_heading.format(column=column)}
{markdown_table(task.card.fairness, groups)}"""
    return text


def model_card(
    spec: DatasetSpec,
    data_version: str,
    params: dict,
    candidate: Metrics,
    comparators: dict[str, Metrics | None],
    slices: list[dict],
    importance: list[dict],
    decision: GateDecision,
    champion_version: str | None,
    assessed: str = "",
    selected: list[str] | None = None,
) -> str:
    task = task_of(spec)
    keys = task.card.metrics
    header = "| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"

    def row(name: str, m: Metrics | None) -> str:  # a metric a model has not (MAPE with a zero target): –
        return f"| {name} | " + " | ".join(f"{m[k]:.4f}" if m and k in m else "–" for k in keys) + " |\n"

    table = header + row("**candidate**", candidate)
    for name, m in comparators.items():
        label = f"champion (v{champion_version})" if name == "champion" and champion_version else name
        table += row(label, m)
    gate_rows = "".join(f"| {'✅' if c.passed else '❌'} | {c.rule} | {c.detail} |\n" for c in decision.checks)
    top = ", ".join(r["feature"] for r in importance[:5])
    cv = f"cv_{task.validation_metric}"
    spread = f"{candidate.get(f'{cv}_mean', float('nan')):.4f} ± {candidate.get(f'{cv}_std', float('nan')):.4f}"
    revision = code_revision()
    used = f"all {len(spec.feature_names)}"
    if selected is not None:
        rule = spec.training.feature_selection
        used = f"{len(selected)} of {len(spec.feature_names)}, chosen by {rule.method} on the training split: "
        used += ", ".join(f"`{n}`" for n in selected)
    return f"""# Model card: {spec.registered_model_name}

**Task:** predict {task.predicts()} — {spec.description or spec.name}
**Data version:** `{data_version}` · **spec hash:** `{spec.spec_hash}` · **training hash:** `{spec.training_hash}`
**Code:** `{revision["code_revision"]}` (uncommitted changes: {revision["code_dirty"]})
**Features:** {used}
{task.decision_line(candidate)}

## Test metrics (untouched test split, same rows for every model)
{table}
Cross-validation on the training split: {task.card.cv_title} {spread}.
Latency: {candidate.get("latency_ms_per_row", float("nan")):.4f} ms/row in batch, \
{candidate.get("latency_ms_single_row", float("nan")):.3f} ms for one row.

## Promotion gate: {"PASSED" if decision.passed else "FAILED"}
| | rule | detail |
|---|---|---|
{gate_rows}
## Slices
{markdown_table((*KEY, *task.card.slices), slices)}
{assessed}
## Parameters
```
{params}
```

## Explanations
Largest mean |SHAP| (LightGBM `pred_contrib`): {top}.

## Known limits
- Trained on {spec.name} rows as validated by its config; rows outside the declared ranges and
  categories are rejected, not scored.
- Metrics are from one held-out split; see the cross-validation spread for their stability.
- Slices with few rows have noisy metrics.
"""


# -- Prefect tasks ---------------------------------------------------------------------------


EVALUATION_RESULT = "evaluation/result.json"


def evaluation_key(spec: DatasetSpec, champion_version: str | None) -> str:
    """What an evaluation depends on besides the run: the config (metrics, gate) and the champion."""
    return f"{spec.cache_token()}-v{champion_version or 'none'}"


def evaluation_still_valid(recorded_key: str | None, spec: DatasetSpec, champion, run_id: str) -> bool:
    """A recorded evaluation holds while the config and the champion are those it was made with;
    once the candidate itself is champion, the evaluation that promoted it stands."""
    if not recorded_key:
        return False
    if champion is not None and champion.run_id == run_id:
        return recorded_key.startswith(f"{spec.cache_token()}-")
    return recorded_key == evaluation_key(spec, champion.version if champion else None)


@dataclass
class Scores:
    candidate: Metrics
    baselines: dict[str, Metrics]
    champion: Metrics | None
    champion_version: str | None
    candidate_is_champion: bool
    slices: list[dict]
    compiled_unavailable: str = ""  # why there is no compiled model (else its parity is in `candidate`)
    champion_slices: list[dict] | None = None
    assessment: Assessment | None = None  # the candidate's figures beyond the headline, and their tables
    errors: list[dict] | None = None  # the candidate's error groups, worst first


@task(name="recorded-evaluation", **UNCACHED)
def recorded_evaluation_task(cfg: TrackingConfig, spec: DatasetSpec, trained: TrainResult) -> EvaluationResult | None:
    """The evaluation already on the run for this config and champion, if any: a re-run reuses it."""
    import mlflow

    recorded = registry.run_tags(cfg, trained.run_id).get("evaluation_key")
    champion = registry.version_by_alias(cfg, registry.CHAMPION)
    if not evaluation_still_valid(recorded, spec, champion, trained.run_id):
        return None
    cfg.activate()
    result = EvaluationResult.model_validate(mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/{EVALUATION_RESULT}"))
    get_run_logger().info("run %s was evaluated with this config and champion: reusing it", trained.run_id)
    card = mlflow.artifacts.load_text(f"runs:/{trained.run_id}/model_card.md")
    gate = "passed" if result.gate.passed else "failed"
    note = f"Reused: the evaluation recorded on MLflow run {trained.run_id} (same config and champion; gate {gate})"
    with tempfile.TemporaryDirectory() as folder:
        local = Path(cfg.client().download_artifacts(trained.run_id, "plots", folder))
        plots = {p.stem: p.read_bytes() for p in local.glob("*.png")}
    publish_evaluation(spec, result, card, plots, note)
    return result.model_copy(update={"reused": True})


COMPILED_DIFF = "compiled_max_abs_diff"


@task(name="score-models", **UNCACHED)
def score_task(cfg: TrackingConfig, spec: DatasetSpec, trained: TrainResult, compiled_cache: Path) -> Scores:
    """Candidate, baselines and the current champion, all on the same untouched test rows; the
    candidate's compiled form (cached in `compiled_cache`) against its booster on those rows."""

    logger = get_run_logger()
    task = task_of(spec)
    test = read_split(trained.manifest_path, "test")
    validation = read_split(trained.manifest_path, "validation")
    y = encode_target(test, spec)
    candidate = registry.load_model(cfg, trained.model_uri)
    scores = candidate.predict_scores(test)
    metrics = task.metrics(y, scores, candidate.decision) | latency(
        candidate.predict_frame, test.head(spec.evaluation.latency_rows)
    )
    x_test, x_val, y_val = feature_matrix(test, spec), feature_matrix(validation, spec), encode_target(validation, spec)
    compiled, unavailable = compiled_for(candidate.booster_text, compiled_cache)
    if compiled is None:
        logger.info("no compiled model: %s", unavailable)
    else:
        metrics[COMPILED_DIFF] = max_abs_difference(compiled, candidate.booster, x_test)
        logger.info(
            "%s: max |compiled − booster| = %.3g on the test rows", compiled.description, metrics[COMPILED_DIFF]
        )
    assessed = task.assess(test, y, scores, candidate.decision)
    metrics |= assessed.metrics
    baselines = {}
    for name in task.baselines:
        try:
            model = registry.load_baseline(cfg, trained.run_id, name)
        except ModelIntegrityError:
            raise
        except Exception as exc:  # a run trained before this baseline existed: its rules fail closed
            logger.warning("run %s has no %s baseline: %s", trained.run_id, name, exc)
            continue
        decision = task.baseline_decision(y_val, task.baseline_scores(model, x_val))
        baselines[name] = task.metrics(y, task.baseline_scores(model, x_test), decision)
    slices = task.slices(test, y, scores, candidate.decision, spec.evaluation.slices)
    champion = registry.version_by_alias(cfg, registry.CHAMPION)
    champion_metrics, champion_slices, same = None, None, False
    if champion is not None:
        same = champion.run_id == trained.run_id
        if same:
            champion_metrics, champion_slices = {k: v for k, v in metrics.items()}, slices
        else:
            try:
                current = registry.load_model(cfg, f"models:/{cfg.model_name}@{registry.CHAMPION}")
                theirs = current.predict_scores(test)
                champion_metrics = task.metrics(y, theirs, current.decision)
                champion_metrics |= task.assess(test, y, theirs, current.decision).metrics
                champion_slices = task.slices(test, y, theirs, current.decision, spec.evaluation.slices)
            except ModelIntegrityError:  # tampered files are refused, not skipped
                raise
            except Exception as exc:  # a champion that cannot score these rows cannot be compared
                logger.warning("champion v%s could not score the test rows: %s", champion.version, exc)
                champion_metrics = {}
    version = champion.version if champion else None
    return Scores(
        metrics, baselines, champion_metrics, version, same, slices, unavailable, champion_slices,
        assessment=assessed, errors=task.error_groups(test, y, scores, candidate.decision),
    )  # fmt: skip


@task(name="cross-validate", **CACHED)
def cross_validate_task(
    cfg: TrackingConfig, spec: DatasetSpec, manifest: SnapshotManifest, manifest_path: Path, trained: TrainResult
):
    train = read_split(manifest_path, "train")
    rounds = registry.load_model(cfg, trained.model_uri).booster.current_iteration()
    categorical = [spec.feature_names.index(c) for c in spec.categorical_features]
    return cross_validate(
        task_of(spec),
        feature_matrix(train, spec),
        encode_target(train, spec),
        base_params(spec) | trained.best_params,
        rounds,
        spec.evaluation.cv_folds,
        categorical,
        spec.training.seed,
    )


@task(name="explain", **UNCACHED)
def explain_task(cfg: TrackingConfig, spec: DatasetSpec, trained: TrainResult, folder: Path):
    """SHAP values from LightGBM's pred_contrib, global importance and every plot."""

    model = registry.load_model(cfg, trained.model_uri)
    test = read_split(trained.manifest_path, "test")
    x, y = feature_matrix(test, spec), encode_target(test, spec)
    scores = model.predict_matrix(x)  # what it serves (calibrated, if it has a calibrator)
    sample = explain_sample(x, spec.evaluation.explain_rows, spec.training.seed)
    contributions = shap_values(model.booster, sample)
    importance = global_importance(model.booster, contributions, spec.feature_names)
    plots = save_plots(folder, model.task, y, scores, model.decision, importance, contributions, sample,
                       spec.feature_names)  # fmt: skip
    return importance, plots


@task(name="gate", **UNCACHED)
def gate_task(spec: DatasetSpec, scores: Scores, cv: Metrics) -> GateDecision:
    others: dict[str, Metrics | None] = dict(scores.baselines)
    others["champion"] = scores.champion
    slices = {"candidate": scores.slices} | ({"champion": scores.champion_slices} if scores.champion_slices else {})
    decision = apply_gate(spec.gate, scores.candidate | cv, others, task_of(spec), slices)
    return with_check(decision, compiled_parity_check(scores.candidate.get(COMPILED_DIFF), scores.compiled_unavailable))


@task(name="log-evaluation", **UNCACHED)
def log_evaluation_task(
    cfg: TrackingConfig,
    spec: DatasetSpec,
    trained: TrainResult,
    scores: Scores,
    cv: Metrics,
    importance: list[dict],
    plots: list[Path],
    decision: GateDecision,
) -> EvaluationResult:
    """Metrics, plots, model card and the gate decision: to the MLflow run and as Prefect artifacts."""

    scores.candidate = scores.candidate | cv

    registry.log_metrics(cfg, trained.run_id, scores.candidate, prefix="test_")
    for name, metrics in scores.baselines.items():
        registry.log_metrics(cfg, trained.run_id, metrics, prefix=f"test_{name}_")
    if scores.champion and not scores.candidate_is_champion:
        registry.log_metrics(cfg, trained.run_id, scores.champion, prefix="test_champion_")
    registry.log_artifact_files(cfg, trained.run_id, plots, "plots")
    registry.log_json(cfg, trained.run_id, scores.slices, "evaluation/slices.json")
    registry.log_json(cfg, trained.run_id, importance, "evaluation/importance.json")
    assessment, errors = scores.assessment or Assessment({}), scores.errors or []
    reliability, fairness = assessment.reliability, assessment.fairness
    registry.log_json(cfg, trained.run_id, {"reliability": reliability, "fairness": fairness, "errors": errors},
                      "evaluation/assessment.json")  # fmt: skip
    comparators = dict(scores.baselines) | {"champion": None if scores.candidate_is_champion else scores.champion}
    card = model_card(
        spec,
        trained.data_version,
        trained.best_params,
        scores.candidate,
        comparators,
        scores.slices,
        importance,
        decision,
        scores.champion_version,
        assessment_sections(task_of(spec), scores.candidate, assessment, errors),
        trained.selected_features,
    )
    registry.log_text(cfg, trained.run_id, card, "model_card.md")
    evaluated_by = {f"evaluation_{k}": v for k, v in code_revision().items()}
    registry.set_tags(
        cfg, trained.run_id, {"gate_passed": decision.passed, "gate_reasons": decision.reasons[:5000]} | evaluated_by
    )
    result = EvaluationResult(
        dataset=spec.name,
        data_version=trained.data_version,
        run_id=trained.run_id,
        threshold=scores.candidate.get("threshold"),
        candidate=scores.candidate,
        baselines=scores.baselines,
        champion=scores.champion,
        champion_version=scores.champion_version,
        candidate_is_champion=scores.candidate_is_champion,
        gate=decision,
        reliability=reliability,
        fairness=fairness,
        errors=errors,
    )
    registry.log_json(cfg, trained.run_id, result.model_dump(), EVALUATION_RESULT)
    registry.set_tags(cfg, trained.run_id, {"evaluation_key": evaluation_key(spec, scores.champion_version)})
    publish_evaluation(spec, result, card, {p.stem: p.read_bytes() for p in plots})
    return result


def publish_evaluation(
    spec: DatasetSpec, result: EvaluationResult, card: str, plots: dict[str, bytes], note: str = ""
) -> None:
    """The model card (with its plots: `plots` by file stem) and the test metrics (candidate,
    baselines, champion on the same rows) as Prefect artifacts; `note` says what a re-run reused."""
    task = task_of(spec)
    key, lead = artifact_key(spec.name), f"_{note}_\n\n" if note else ""
    titles = task.card.plots | {"shap_summary": "SHAP summary"}
    shown = [(title, plots[stem]) for stem, title in titles.items() if stem in plots]
    pictures = [f"#### {title}\n\n{markdown_image(title, png)}\n" for title, png in shown]
    body = lead + card + ("\n### Plots (test split)\n\n" + "\n".join(pictures) if pictures else "")
    description = f"Model card of run {result.run_id}"
    create_markdown_artifact(key=f"{key}-model-card", markdown=body, description=description)
    champion = None if result.candidate_is_champion else result.champion
    comparators = dict(result.baselines) | {"champion": champion}
    rows = [{"model": "candidate", **_headline(task, result.candidate)}]
    rows += [{"model": name, **_headline(task, m)} for name, m in comparators.items() if m]
    description = "Test metrics on the same rows" + (f" ({note})" if note else "")
    create_table_artifact(key=f"{key}-test-metrics", table=rows, description=description[:500])
    if result.errors:
        what = "Where the candidate's mistakes gather (test split, worst first)"
        create_table_artifact(key=f"{key}-error-analysis", table=[table_row(r) for r in result.errors[:50]],
                              description=what)  # fmt: skip
    for column, groups in result.fairness.items():
        create_table_artifact(key=f"{key}-fairness-{artifact_key(column)}", table=[table_row(g) for g in groups],
                              description=task.card.fairness_description.format(column=column))  # fmt: skip


def _headline(task: Task, m: Metrics) -> dict:
    return {k: round(float(m[k]), 4) for k in task.card.headline if k in m}
