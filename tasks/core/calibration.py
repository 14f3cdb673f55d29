"""An optional calibrator of the booster's probabilities, fitted on the validation split and kept
only when it lowers the validation log loss (judged out of fold). Stored as plain numbers in the
model's JSON and applied with NumPy: serving loads no scikit-learn and unpickles nothing."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

EPS = 1e-6  # probabilities stay inside (0, 1): a calibrated 0 or 1 would make the log loss infinite


class Calibrator(BaseModel):
    method: Literal["sigmoid", "isotonic"]
    a: float = 1.0  # sigmoid (Platt): p' = σ(a · logit(p) + b)
    b: float = 0.0
    x: list[float] = []  # isotonic: p' = the piecewise-linear map through (x, y)
    y: list[float] = []

    def apply(self, proba: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(proba, dtype=float), EPS, 1 - EPS)
        if self.method == "sigmoid":
            return 1 / (1 + np.exp(-(self.a * np.log(p / (1 - p)) + self.b)))
        return np.clip(np.interp(p, self.x, self.y), EPS, 1 - EPS)


def fit_calibrator(method: str, y: np.ndarray, proba: np.ndarray) -> Calibrator:
    y, p = np.asarray(y).astype(int), np.clip(np.asarray(proba, dtype=float), EPS, 1 - EPS)
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        fit = LogisticRegression(C=1e6, max_iter=1000).fit(np.log(p / (1 - p)).reshape(-1, 1), y)
        return Calibrator(method="sigmoid", a=float(fit.coef_[0, 0]), b=float(fit.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS).fit(p, y)
    return Calibrator(method="isotonic", x=fit.X_thresholds_.tolist(), y=fit.y_thresholds_.tolist())


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(np.asarray(proba, dtype=float), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def out_of_fold_log_loss(method: str, y: np.ndarray, proba: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """The validation log loss of calibrated probabilities, each row calibrated by a map fitted on
    the other folds (stratified): what calibration would do to rows it has not seen."""
    from sklearn.model_selection import StratifiedKFold

    y, proba = np.asarray(y).astype(int), np.asarray(proba, dtype=float)
    calibrated = np.empty_like(proba)
    for fit_rows, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(proba, y):
        calibrated[held_out] = fit_calibrator(method, y[fit_rows], proba[fit_rows]).apply(proba[held_out])
    return log_loss(y, calibrated)


def calibrate(method: str, y: np.ndarray, proba: np.ndarray, seed: int = 0) -> tuple[Calibrator | None, dict]:
    """The calibrator fitted on all of `y`/`proba` (the validation split) if it lowers the log
    loss out of fold, else None; and the figures it was judged by."""
    before, after = log_loss(np.asarray(y).astype(int), proba), out_of_fold_log_loss(method, y, proba, seed=seed)
    kept = after < before
    figures = {"validation_log_loss_uncalibrated": before, "validation_log_loss_calibrated": after,
               "calibrator_kept": float(kept)}  # fmt: skip
    return (fit_calibrator(method, y, proba) if kept else None), figures
