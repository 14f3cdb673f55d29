"""Evaluation: test metrics of the candidate, the baselines and the champion on the same rows,
calibration, 95% intervals, error analysis, group fairness, cross-validation, explanations, plots
and the model card; the metrics, the assessment and the gate themselves are pure
(`tasks/core/metrics.py`, `tasks/core/assessment.py`, `tasks/core/gate.py`). Functions first,
`@task` wrappers below."""

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
from tasks.core.assessment import assess, spec_error_clusters
from tasks.core.compiled import compiled_for, max_abs_difference
from tasks.core.errors import ModelIntegrityError
from tasks.core.features import encode_target, feature_matrix
from tasks.core.gate import BASELINES, BOOTSTRAPPED, GateDecision, apply_gate, compiled_parity_check, with_check
from tasks.core.metrics import Metrics, binary_metrics, choose_threshold, slice_metrics
from tasks.core.spec import DatasetSpec
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
    x: np.ndarray, y: np.ndarray, params: dict, rounds: int, folds: int, categorical: list[int], seed: int
) -> Metrics:
    """k-fold ROC AUC of the chosen configuration on the training split."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    scores = []
    for fit_idx, hold_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        data = lgb.Dataset(x[fit_idx], y[fit_idx], categorical_feature=categorical, params={"verbosity": -1})
        booster = lgb.train(params, data, num_boost_round=rounds)
        scores.append(roc_auc_score(y[hold_idx], booster.predict(x[hold_idx])))
    return {"cv_roc_auc_mean": float(np.mean(scores)), "cv_roc_auc_std": float(np.std(scores))}


def explain_sample(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """At most `rows` rows of `x`, drawn with a seed. TreeSHAP costs ~1 ms per row here, while
    the mean |SHAP| ranking settles after a few thousand rows."""
    if len(x) <= rows:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]


def shap_values(booster, x: np.ndarray) -> np.ndarray:
    """Per-row SHAP contributions from LightGBM's own `pred_contrib` (last column, the bias, dropped)."""
    return booster.predict(x, pred_contrib=True)[:, :-1]


def global_importance(booster, contributions: np.ndarray, names: list[str]) -> list[dict]:
    gain = booster.feature_importance(importance_type="gain")
    mean_abs = np.abs(contributions).mean(axis=0)
    order = np.argsort(-mean_abs)
    return [{"feature": names[i], "mean_abs_shap": float(mean_abs[i]), "gain": float(gain[i])} for i in order]


# -- plots ---------------------------------------------------------------------------------
def save_plots(folder: Path, y, proba, threshold, importance: list[dict], contributions, x, names) -> list[Path]:
    """ROC, PR, calibration, confusion matrix, feature importance and SHAP summary (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(name: str, draw) -> None:
        fig, ax = plt.subplots(figsize=(6, 5))
        draw(ax)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

    save("roc_curve", lambda ax: RocCurveDisplay.from_predictions(y, proba, ax=ax))
    save("pr_curve", lambda ax: PrecisionRecallDisplay.from_predictions(y, proba, ax=ax))
    save("calibration", lambda ax: CalibrationDisplay.from_predictions(y, proba, n_bins=10, ax=ax))
    save(
        "confusion_matrix",
        lambda ax: ConfusionMatrixDisplay.from_predictions(y, (proba >= threshold).astype(int), ax=ax),
    )
    top = importance[:15][::-1]

    def bars(ax):
        ax.barh([r["feature"] for r in top], [r["mean_abs_shap"] for r in top])
        ax.set_xlabel("mean |SHAP| (log-odds)")

    save("feature_importance", bars)

    def beeswarm(ax):
        rng = np.random.default_rng(0)
        for row, r in enumerate(top):
            i = names.index(r["feature"])
            col = x[:, i]
            finite = np.isfinite(col)
            scaled = np.full(col.shape, 0.5)
            if finite.any() and np.ptp(col[finite]) > 0:
                scaled[finite] = (col[finite] - col[finite].min()) / np.ptp(col[finite])
            jitter = rng.uniform(-0.3, 0.3, len(col))
            ax.scatter(contributions[:, i], row + jitter, c=scaled, cmap="coolwarm", s=4, alpha=0.6)
        ax.set_yticks(range(len(top)), [r["feature"] for r in top])
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("SHAP value (log-odds); colour: feature value low → high")

    save("shap_summary", beeswarm)
    return paths


# -- model card ------------------------------------------------------------------------------
NO_CLUSTERS = "| – | no group of enough rows | | | | | | |\n"


def _figure(value) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def assessment_sections(candidate: Metrics, reliability: list[dict], fairness: dict[str, list[dict]],
                        errors: list[dict], top: int = 10) -> str:  # fmt: skip
    """The model card's calibration, uncertainty, error-analysis and fairness sections."""
    intervals = "".join(
        f"| {m} | {_figure(candidate.get(m))} | [{_figure(candidate.get(f'{m}_ci_low'))}, "
        f"{_figure(candidate.get(f'{m}_ci_high'))}] |\n"
        for m in BOOTSTRAPPED
    )
    bins = "".join(
        f"| {b['bin']} | {b['rows']} | {_figure(b['mean_predicted'])} | {_figure(b['observed_rate'])} |\n"
        for b in reliability
    )
    clusters = "".join(
        f"| {r['column']} | {r['group']} | {r['rows']} | {r['errors']} | {r['false_positives']} | "
        f"{r['false_negatives']} | {r['error_rate']:.3f} | {r['excess']:+.3f} |\n"
        for r in errors[:top]
    )
    text = f"""## Uncertainty (95% bootstrap intervals over the test rows)
| metric | value | interval |
|---|---|---|
{intervals}
## Calibration: ECE {_figure(candidate.get("ece"))}
| predicted | rows | mean predicted | observed rate |
|---|---|---|---|
{bins}
## Error analysis (at the threshold; groups by excess error rate over the overall rate)
| column | group | rows | errors | false positives | false negatives | error rate | excess |
|---|---|---|---|---|---|---|---|
{clusters or NO_CLUSTERS}"""
    for column, groups in fairness.items():
        rows = "".join(
            f"| {g['group']} | {g['rows']} | {_figure(g['selection_rate'])} | {_figure(g['tpr'])} | "
            f"{_figure(g['fpr'])} | {_figure(g['selection_rate_ratio'])} | {_figure(g['tpr_ratio'])} | "
            f"{_figure(g['fpr_difference'])} | {'yes' if g['judged'] else 'too few rows'} |\n"
            for g in groups
        )
        text += f"""
## Fairness across `{column}` (ratios and differences to the best judged group)
| group | rows | selection rate | TPR | FPR | selection ratio | TPR ratio | FPR difference | judged |
|---|---|---|---|---|---|---|---|---|
{rows}"""
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
    keys = ["roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall"]
    header = "| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"

    def row(name: str, m: Metrics | None) -> str:
        if m is None:
            return f"| {name} | " + " | ".join("–" for _ in keys) + " |\n"
        return f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |\n"

    table = header + row("**candidate**", candidate)
    for name, m in comparators.items():
        label = f"champion (v{champion_version})" if name == "champion" and champion_version else name
        table += row(label, m)
    slice_rows = "".join(
        f"| {s['column']} | {s['value']} | {s['rows']} | {s['positives']} | {s['roc_auc']:.4f} | {s['f1']:.4f} |\n"
        for s in slices
    )
    gate_rows = "".join(f"| {'✅' if c.passed else '❌'} | {c.rule} | {c.detail} |\n" for c in decision.checks)
    top = ", ".join(r["feature"] for r in importance[:5])
    revision = code_revision()
    used = f"all {len(spec.feature_names)}"
    if selected is not None:
        rule = spec.training.feature_selection
        used = f"{len(selected)} of {len(spec.feature_names)}, chosen by {rule.method} on the training split: "
        used += ", ".join(f"`{n}`" for n in selected)
    return f"""# Model card: {spec.registered_model_name}

**Task:** predict `{spec.target.column} == {spec.target.positive!r}` — {spec.description or spec.name}
**Data version:** `{data_version}` · **spec hash:** `{spec.spec_hash}` · **training hash:** `{spec.training_hash}`
**Code:** `{revision["code_revision"]}` (uncommitted changes: {revision["code_dirty"]})
**Features:** {used}
**Decision threshold:** {candidate["threshold"]:.4f} (chosen on validation by `{spec.evaluation.threshold}`)

## Test metrics (untouched test split, same rows for every model)
{table}
Cross-validation on the training split: ROC AUC {candidate.get("cv_roc_auc_mean", float("nan")):.4f} ± \
{candidate.get("cv_roc_auc_std", float("nan")):.4f}.
Latency: {candidate.get("latency_ms_per_row", float("nan")):.4f} ms/row in batch, \
{candidate.get("latency_ms_single_row", float("nan")):.3f} ms for one row.

## Promotion gate: {"PASSED" if decision.passed else "FAILED"}
| | rule | detail |
|---|---|---|
{gate_rows}
## Slices
| column | value | rows | positives | ROC AUC | F1 |
|---|---|---|---|---|---|
{slice_rows}
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
    reliability: list[dict] | None = None  # the candidate's reliability table
    fairness: dict[str, list[dict]] | None = None  # the candidate's groups, per protected column
    errors: list[dict] | None = None  # the candidate's error clusters, worst first


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
    test = read_split(trained.manifest_path, "test")
    validation = read_split(trained.manifest_path, "validation")
    y = encode_target(test, spec)
    candidate = registry.load_model(cfg, trained.model_uri)
    proba = candidate.predict_proba(test)
    metrics = binary_metrics(y, proba, candidate.threshold) | latency(
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
    assessed = assess(test, y, proba, candidate.threshold, spec)
    metrics |= assessed["metrics"]
    baselines = {}
    for name in BASELINES:
        try:
            model = registry.load_baseline(cfg, trained.run_id, name)
        except ModelIntegrityError:
            raise
        except Exception as exc:  # a run trained before this baseline existed: its rules fail closed
            logger.warning("run %s has no %s baseline: %s", trained.run_id, name, exc)
            continue
        threshold = choose_threshold(y_val, model.predict_proba(x_val)[:, 1], spec.evaluation.threshold)
        baselines[name] = binary_metrics(y, model.predict_proba(x_test)[:, 1], threshold)
    slices = slice_metrics(test, y, proba, candidate.threshold, spec.evaluation.slices)
    champion = registry.version_by_alias(cfg, registry.CHAMPION)
    champion_metrics, champion_slices, same = None, None, False
    if champion is not None:
        same = champion.run_id == trained.run_id
        if same:
            champion_metrics, champion_slices = {k: v for k, v in metrics.items()}, slices
        else:
            try:
                current = registry.load_model(cfg, f"models:/{cfg.model_name}@{registry.CHAMPION}")
                theirs = current.predict_proba(test)
                champion_metrics = binary_metrics(y, theirs, current.threshold)
                champion_metrics |= assess(test, y, theirs, current.threshold, spec)["metrics"]
                champion_slices = slice_metrics(test, y, theirs, current.threshold, spec.evaluation.slices)
            except ModelIntegrityError:  # tampered files are refused, not skipped
                raise
            except Exception as exc:  # a champion that cannot score these rows cannot be compared
                logger.warning("champion v%s could not score the test rows: %s", champion.version, exc)
                champion_metrics = {}
    version = champion.version if champion else None
    errors = spec_error_clusters(test, y, proba, candidate.threshold, spec)
    return Scores(
        metrics, baselines, champion_metrics, version, same, slices, unavailable, champion_slices,
        assessed["reliability"], assessed["fairness"], errors,
    )  # fmt: skip


@task(name="cross-validate", **CACHED)
def cross_validate_task(
    cfg: TrackingConfig, spec: DatasetSpec, manifest: SnapshotManifest, manifest_path: Path, trained: TrainResult
):
    train = read_split(manifest_path, "train")
    rounds = registry.load_model(cfg, trained.model_uri).booster.current_iteration()
    categorical = [spec.feature_names.index(c) for c in spec.categorical_features]
    return cross_validate(
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
    proba = model.predict_matrix(x)  # what it serves (calibrated, if it has a calibrator)
    sample = explain_sample(x, spec.evaluation.explain_rows, spec.training.seed)
    contributions = shap_values(model.booster, sample)
    importance = global_importance(model.booster, contributions, spec.feature_names)
    plots = save_plots(folder, y, proba, model.threshold, importance, contributions, sample, spec.feature_names)
    return importance, plots


@task(name="gate", **UNCACHED)
def gate_task(spec: DatasetSpec, scores: Scores, cv: Metrics) -> GateDecision:
    others: dict[str, Metrics | None] = dict(scores.baselines)
    others["champion"] = scores.champion
    slices = {"candidate": scores.slices} | ({"champion": scores.champion_slices} if scores.champion_slices else {})
    decision = apply_gate(spec.gate, scores.candidate | cv, others, slices)
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
    reliability, fairness, errors = scores.reliability or [], scores.fairness or {}, scores.errors or []
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
        assessment_sections(scores.candidate, reliability, fairness, errors),
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
        threshold=scores.candidate["threshold"],
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


CARD_PLOTS = {"roc_curve": "ROC curve", "pr_curve": "Precision-recall curve", "calibration": "Calibration",
              "shap_summary": "SHAP summary"}  # fmt: skip


def publish_evaluation(
    spec: DatasetSpec, result: EvaluationResult, card: str, plots: dict[str, bytes], note: str = ""
) -> None:
    """The model card (with its plots: `plots` by file stem) and the test metrics (candidate,
    baselines, champion on the same rows) as Prefect artifacts; `note` says what a re-run reused."""
    key, lead = artifact_key(spec.name), f"_{note}_\n\n" if note else ""
    shown = [(title, plots[stem]) for stem, title in CARD_PLOTS.items() if stem in plots]
    pictures = [f"#### {title}\n\n{markdown_image(title, png)}\n" for title, png in shown]
    body = lead + card + ("\n### Plots (test split)\n\n" + "\n".join(pictures) if pictures else "")
    description = f"Model card of run {result.run_id}"
    create_markdown_artifact(key=f"{key}-model-card", markdown=body, description=description)
    champion = None if result.candidate_is_champion else result.champion
    comparators = dict(result.baselines) | {"champion": champion}
    rows = [{"model": "candidate", **_headline(result.candidate)}]
    rows += [{"model": name, **_headline(m)} for name, m in comparators.items() if m]
    description = "Test metrics on the same rows" + (f" ({note})" if note else "")
    create_table_artifact(key=f"{key}-test-metrics", table=rows, description=description[:500])
    if result.errors:
        what = "Where the candidate's mistakes gather (test split, worst first)"
        create_table_artifact(key=f"{key}-error-analysis", table=[table_row(r) for r in result.errors[:50]],
                              description=what)  # fmt: skip
    for column, groups in result.fairness.items():
        create_table_artifact(key=f"{key}-fairness-{artifact_key(column)}", table=[table_row(g) for g in groups],
                              description=f"Selection rate, TPR and FPR per {column} group (test split)")  # fmt: skip


def _headline(m: Metrics) -> dict:
    return {k: round(float(m[k]), 4) for k in ("roc_auc", "pr_auc", "log_loss", "brier", "f1") if k in m}
