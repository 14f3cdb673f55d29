"""Binary classification: a target with two labels, one of them positive. The model answers the
positive label's probability (calibrated when a calibrator was kept) and the label at the
threshold chosen on validation."""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.core.assessment import (
    Assessment,
    error_clusters,
    expected_calibration_error,
    fairness_figures,
    group_fairness,
    reliability,
    slice_table,
    values_of,
)
from tasks.core.baselines import linear_model, shallow_tree
from tasks.core.calibration import Calibrator, calibrate, log_loss
from tasks.core.card import JUDGED, CardLayout, Column, figure, markdown_table
from tasks.core.gate import GateRule, Metrics
from tasks.core.metrics import (
    average_precision,
    binary_metrics,
    brier,
    choose_threshold,
    is_positive,
    roc_auc,
)
from tasks.core.plots import Draw, binary_plots
from tasks.core.task import Decision, Metric, Task


class Threshold(Decision):
    threshold: float
    calibrator: Calibrator | None = None  # applied to the booster's probabilities; the threshold is on calibrated ones


class Binary(Task):
    kind = "binary"
    higher_is_better = frozenset({
        "roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "cv_roc_auc_mean",
        "fairness_selection_rate_ratio", "fairness_tpr_ratio",
    })  # fmt: skip
    lower_is_better = frozenset(
        {"log_loss", "brier", "latency_ms_per_row", "cv_roc_auc_std", "ece", "fairness_fpr_difference"}
    )
    bootstrapped = ("roc_auc", "pr_auc", "log_loss", "brier")
    slice_metrics = ("roc_auc", "f1")
    baselines = ("majority_class", "stratified", "uniform", "logistic_regression", "decision_tree")
    live_metrics = ("roc_auc", "pr_auc", "f1", "accuracy")
    score_column = "probability"
    options = frozenset({"training.calibration", "evaluation.threshold"})
    tuning_direction = "maximize"
    validation_metric = "roc_auc"

    @classmethod
    def default_gate(cls) -> list[GateRule]:
        return [GateRule(metric="roc_auc", vs="champion"), GateRule(metric="roc_auc", vs="logistic_regression")]

    @property
    def positive(self) -> str:
        return self.spec.target.positive

    @property
    def negative(self) -> str:
        return next(label for label in self.spec.target.labels if label != self.positive)

    def label_enum(self) -> pl.Enum:
        """The labels as an Enum (negative first): how bulk answers carry them and the log stores them."""
        return pl.Enum([self.negative, self.positive])

    # -- the data contract ---------------------------------------------------------------------
    def strata(self, target: pl.Expr) -> pl.Expr:
        return target

    def untrainable(self, counts: pl.DataFrame) -> str | None:
        target, labels = self.spec.target.column, self.spec.target.labels
        classes = dict(zip(counts.get_column(target), counts.get_column("count"), strict=True))
        missing = [label for label in labels if not classes.get(label)]
        if not missing:
            return None
        found = ", ".join(f"{label!r}: {n} rows" for label, n in sorted(classes.items()))
        return (
            f"the kept rows have only one class of `{target}` ({found}); "
            f"a model needs rows of each of {labels}, and there are none of {missing}"
        )

    def encode(self, target: pl.Series) -> np.ndarray:
        return (target == self.positive).cast(pl.Int8).to_numpy()

    # -- training ------------------------------------------------------------------------------
    def lgb_params(self) -> dict:
        return {"objective": "binary", "metric": "auc"}

    @property
    def tuning_metric(self) -> str:
        return "auc"

    def fit_baselines(self, x_train, y_train, x_val, y_val, categorical, seed):
        """Dummies (`prior`: every row the training share of positives, the majority class's ranking;
        `stratified`: labels drawn at that share; `uniform`: at 1/2), logistic regression with its C
        chosen on validation, a shallow tree."""
        from sklearn.dummy import DummyClassifier  # lazy: ~1 s, only fitting needs scikit-learn
        from sklearn.linear_model import LogisticRegression
        from sklearn.tree import DecisionTreeClassifier

        def logistic(c: float) -> LogisticRegression:
            return LogisticRegression(C=c, max_iter=5000, random_state=seed)

        fitted = {
            "majority_class": DummyClassifier(strategy="prior", random_state=seed).fit(x_train, y_train),
            "stratified": DummyClassifier(strategy="stratified", random_state=seed).fit(x_train, y_train),
            "uniform": DummyClassifier(strategy="uniform", random_state=seed).fit(x_train, y_train),
            "logistic_regression": linear_model(self, logistic, x_train, y_train, x_val, y_val, categorical),
            "decision_tree": shallow_tree(DecisionTreeClassifier, x_train, y_train, seed),
        }
        return {name: fitted[name] for name in self.baselines}

    def baseline_scores(self, model, x: np.ndarray) -> np.ndarray:
        return model.predict_proba(x)[:, 1]

    def fit_decision(self, y_val: np.ndarray, raw_val: np.ndarray) -> tuple[Threshold, dict[str, float]]:
        """With `training.calibration`, a calibrator of the validation probabilities (kept only when
        it lowers the log loss out of fold); then the threshold chosen on the (calibrated) ones."""
        t = self.spec.training
        calibrator, figures, proba = None, {}, raw_val
        if t.calibration != "none":
            calibrator, figures = calibrate(t.calibration, y_val, raw_val, t.seed)
            proba = raw_val if calibrator is None else calibrator.apply(raw_val)
        threshold = choose_threshold(y_val, proba, self.spec.evaluation.threshold)
        return Threshold(threshold=threshold, calibrator=calibrator), figures

    def decision_tags(self, decision: Threshold) -> dict[str, str]:
        kept = {"calibrator": decision.calibrator.method} if decision.calibrator is not None else {}
        return {"threshold": str(decision.threshold)} | kept

    def mutual_information(self, x: np.ndarray, y: np.ndarray, discrete: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.feature_selection import mutual_info_classif  # lazy: only feature selection needs it

        return mutual_info_classif(x, y, discrete_features=discrete, random_state=seed)

    # -- answers -------------------------------------------------------------------------------
    def scores(self, raw: np.ndarray, decision: Threshold) -> np.ndarray:
        return raw if decision.calibrator is None else decision.calibrator.apply(raw)

    def labels(self, scores: np.ndarray, decision: Threshold) -> np.ndarray:
        return np.where(is_positive(scores, decision.threshold), self.positive, self.negative)

    def answer_columns(self, scores: np.ndarray, decision: Threshold) -> dict[str, pl.Series]:
        """The label (a `label_enum`), without a Python string per row; null where not scored."""
        codes = pl.Series(is_positive(scores, decision.threshold).astype(np.int8))
        labels = pl.Series("label", [self.negative, self.positive], dtype=self.label_enum()).gather(codes)
        label = pl.select(pl.when(pl.Series(np.isnan(scores))).then(None).otherwise(labels).alias("label"))
        return {"label": label.to_series()}

    def decision_json(self, decision: Threshold) -> dict:
        body: dict = {"threshold": decision.threshold}
        if decision.calibrator is not None:
            body["calibrator"] = decision.calibrator.model_dump()
        return body

    def decision_from_json(self, body: dict) -> Threshold:
        calibrator = Calibrator.model_validate(body["calibrator"]) if body.get("calibrator") else None
        return Threshold(threshold=float(body["threshold"]), calibrator=calibrator)

    def answer_rows(self, scores: np.ndarray, decision: Threshold) -> list[dict]:
        positive, negative = self.positive, self.negative
        yes = is_positive(scores, decision.threshold).tolist()
        return [{self.score_column: p, "label": positive if y else negative}
                for p, y in zip(scores.tolist(), yes, strict=True)]  # fmt: skip

    def answer_fields(self, decision: Threshold) -> dict[str, tuple[object, object]]:
        return {self.score_column: (float, ...), "label": (str, ...)}

    def answer_json(self, rows: list[dict], decision: Threshold) -> list[dict]:
        return rows

    def answer_counts(self, scores: np.ndarray, decision: Threshold) -> dict[str, int]:
        positives = int(np.count_nonzero(is_positive(scores, decision.threshold)))
        return {self.positive: positives, self.negative: len(scores) - positives}

    # -- evaluation ----------------------------------------------------------------------------
    def metrics(self, y: np.ndarray, scores: np.ndarray, decision: Threshold) -> Metrics:
        return binary_metrics(y, scores, decision.threshold)

    def metric_function(self, name: str) -> Metric:
        return {"roc_auc": roc_auc, "pr_auc": average_precision, "log_loss": log_loss, "brier": brier}[name]

    min_slice_class_rows = 30  # fewer positives or negatives: a slice's ROC AUC moves too much between fits
    unjudged_slices = f"under {min_slice_class_rows} positives or negatives"
    fairness_worst = {  # gateable: the worst judged group over every protected column
        "fairness_selection_rate_ratio": ("selection_rate_ratio", min),
        "fairness_tpr_ratio": ("tpr_ratio", min),
        "fairness_fpr_difference": ("fpr_difference", max),
    }
    card = CardLayout(
        metrics=("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall"),
        headline=("roc_auc", "pr_auc", "log_loss", "brier", "f1"),
        cv_title="ROC AUC",
        plots={"roc_curve": "ROC curve", "pr_curve": "Precision-recall curve", "calibration": "Calibration"},
        contribution_units="log-odds",
        slices=(Column("rows", "rows", "d"), Column("positives", "positives", "d"), Column("roc_auc", "ROC AUC", ".4f"),
                Column("f1", "F1", ".4f")),
        error_heading="Error analysis (at the threshold; groups by excess error rate over the overall rate)",
        errors=(Column("column", "column", ""), Column("group", "group", ""), Column("rows", "rows", "d"),
                Column("errors", "errors", "d"), Column("false_positives", "false positives", "d"),
                Column("false_negatives", "false negatives", "d"), Column("error_rate", "error rate", ".3f"),
                Column("excess", "excess", "+.3f")),
        fairness_heading="Fairness across `{column}` (ratios and differences to the best judged group)",
        fairness_description="Selection rate, TPR and FPR per {column} group (test split)",
        fairness=(Column("group", "group", ""), Column("rows", "rows", "d"), Column("selection_rate", "selection rate"),
                  Column("tpr", "TPR"), Column("fpr", "FPR"), Column("selection_rate_ratio", "selection ratio"),
                  Column("tpr_ratio", "TPR ratio"), Column("fpr_difference", "FPR difference"),
                  Column("judged", "judged", JUDGED)),
    )  # fmt: skip

    def baseline_decision(self, y_val: np.ndarray, scores_val: np.ndarray) -> Threshold:
        """The threshold chosen on the baseline's validation probabilities by the candidate's rule."""
        return Threshold(threshold=choose_threshold(y_val, scores_val, self.spec.evaluation.threshold))

    def cv_folds(self, y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import StratifiedKFold  # lazy: ~1 s, only cross-validation needs it

        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))

    def assess(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Threshold) -> Assessment:
        """ECE and the reliability table, the intervals, and per protected group the selection rate,
        TPR and FPR at the threshold."""
        ev = self.spec.evaluation
        y, proba = np.asarray(y).astype(int), np.asarray(scores, dtype=float)
        metrics = {"ece": expected_calibration_error(y, proba, ev.calibration_bins)} | self.intervals(y, proba)
        pred = is_positive(proba, decision.threshold)
        fairness = {column: group_fairness(values_of(frame, column), y, pred, ev.min_group_rows)
                    for column in ev.protected}  # fmt: skip
        return Assessment(metrics | fairness_figures(fairness, self.fairness_worst),
                          reliability(y, proba, ev.calibration_bins), fairness)  # fmt: skip

    def slices(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Threshold,
               columns: list[str]) -> list[dict]:  # fmt: skip
        """Per slice: positives, ROC AUC and F1 at the threshold; judged with enough of each class."""

        def measure(rows: np.ndarray) -> dict:
            m = binary_metrics(y[rows], scores[rows], decision.threshold)
            positives, negatives = int(y[rows].sum()), int((y[rows] == 0).sum())
            return {"positives": positives, "roc_auc": m["roc_auc"], "f1": m["f1"],
                    "judged": min(positives, negatives) >= self.min_slice_class_rows}  # fmt: skip

        return slice_table(frame, columns, measure)

    def error_groups(self, frame: pl.DataFrame, y: np.ndarray, scores: np.ndarray, decision: Threshold) -> list[dict]:
        """The mistakes at the threshold (false positives and negatives), by excess error rate."""
        ev = self.spec.evaluation
        categorical, numeric = self.error_features()
        return error_clusters(frame, y, scores, decision.threshold, categorical, numeric, ev.error_bins,
                              ev.error_min_rows)  # fmt: skip

    def plots(self, y: np.ndarray, scores: np.ndarray, decision: Threshold) -> dict[str, Draw]:
        return binary_plots(y, scores, decision.threshold)

    def predicts(self) -> str:
        return f"`{self.spec.target.column} == {self.positive!r}`"

    def decision_line(self, candidate: Metrics) -> str:
        rule = self.spec.evaluation.threshold
        return f"**Decision threshold:** {candidate['threshold']:.4f} (chosen on validation by `{rule}`)"

    def decision_section(self, candidate: Metrics, assessment: Assessment) -> str:
        """How calibrated the probabilities are: ECE and the reliability table."""
        bins = (Column("bin", "predicted", ""), Column("rows", "rows", "d"), Column("mean_predicted", "mean predicted"),
                Column("observed_rate", "observed rate"))  # fmt: skip
        return f"## Calibration: ECE {figure(candidate.get('ece'))}\n" + markdown_table(bins, assessment.reliability)

    # -- monitoring (live metric, prediction and target drift, labels) ---------------------------
    target_drift_counts = False  # a new share of positives is reported; drift verdicts stay as before it was
    performance_drop = 0.05  # ROC AUC 0.05 under the test's

    def live_metric(self, metric: str, y: np.ndarray, answers: pl.DataFrame) -> float:
        """Ranking metrics on the probability, threshold metrics on the label answered."""
        if metric in ("roc_auc", "pr_auc"):
            scores = answers.get_column(self.score_column)
        else:
            scores = (answers.get_column("label") == self.positive).cast(pl.Float64)
        return binary_metrics(y, scores.to_numpy(), 0.5)[metric]

    def agreement(self, new: pl.DataFrame, old: pl.DataFrame) -> float | None:
        """The share given the same label."""
        return float((new.get_column("label") == old.get_column("label")).mean()) if new.height else None
