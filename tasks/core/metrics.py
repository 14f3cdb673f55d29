"""Metrics of a binary classifier and the choice of its decision threshold."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from tasks.core.gate import Metrics
from tasks.core.model import is_positive


def binary_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> Metrics:
    """Ranking and probability metrics, plus the confusion matrix at `threshold`."""
    y = np.asarray(y).astype(int)
    proba = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    pred = is_positive(proba, threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both_classes = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, proba)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(y, proba)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y, proba)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": (tp + tn) / len(y),
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def choose_threshold(y: np.ndarray, proba: np.ndarray, rule: str | float) -> float:
    """The decision threshold, chosen on validation rows: best F1, best Youden J, or fixed."""
    if isinstance(rule, int | float):
        return float(rule)
    if rule == "youden":
        fpr, tpr, thresholds = roc_curve(y, proba)
        return float(np.clip(thresholds[np.argmax(tpr - fpr)], 0.0, 1.0))
    precision, recall, thresholds = precision_recall_curve(y, proba)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[np.argmax(f1[:-1])])


def slice_metrics(frame: pl.DataFrame, y: np.ndarray, proba: np.ndarray, threshold: float, columns: list[str]):
    """Metrics per value of each named category column (rows, positives, ROC AUC, F1)."""
    rows = []
    for column in columns:
        values = frame.get_column(column).cast(pl.String).fill_null("<null>").to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            m = binary_metrics(y[mask], proba[mask], threshold)
            rows.append(
                {
                    "column": column,
                    "value": value,
                    "rows": int(mask.sum()),
                    "positives": int(y[mask].sum()),
                    "roc_auc": m["roc_auc"],
                    "f1": m["f1"],
                }
            )
    return rows
