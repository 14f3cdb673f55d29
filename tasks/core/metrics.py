"""Metrics of a binary classifier and the choice of its decision threshold."""

from __future__ import annotations

import numpy as np

from tasks.core.gate import Metrics


def is_positive(proba: np.ndarray, threshold: float) -> np.ndarray:
    """The decision rule, in one place: a probability at or above the threshold is positive."""
    return np.asarray(proba) >= threshold


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score  # lazy: a serving worker never loads scikit-learn

    return float(roc_auc_score(y, proba)) if 0 < y.sum() < len(y) else float("nan")


def average_precision(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, proba)) if 0 < y.sum() < len(y) else float("nan")


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean((proba - y) ** 2))


def binary_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> Metrics:
    """Ranking and probability metrics, plus the confusion matrix at `threshold`."""
    from sklearn.metrics import brier_score_loss, log_loss

    y = np.asarray(y).astype(int)
    proba = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    pred = is_positive(proba, threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "roc_auc": roc_auc(y, proba),
        "pr_auc": average_precision(y, proba),
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
    from sklearn.metrics import precision_recall_curve, roc_curve

    if isinstance(rule, int | float):
        return float(rule)
    if rule == "youden":
        fpr, tpr, thresholds = roc_curve(y, proba)
        return float(np.clip(thresholds[np.argmax(tpr - fpr)], 0.0, 1.0))
    precision, recall, thresholds = precision_recall_curve(y, proba)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[np.argmax(f1[:-1])])
