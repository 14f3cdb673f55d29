"""The evaluation's plots as drawing functions (one per file stem): each task kind names its own
(`Task.plots`), the explanations' are shared, and `save` writes them all as PNG. Matplotlib and
scikit-learn are imported only when a plot is drawn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.core.metrics import is_positive

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Draw = Callable[["Axes"], None]


def binary_plots(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, Draw]:
    """ROC and precision-recall curves, the calibration curve and the confusion matrix at the threshold."""
    from sklearn.calibration import CalibrationDisplay  # lazy: ~1 s, only drawing needs it
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    labels = is_positive(proba, threshold).astype(int)
    return {
        "roc_curve": lambda ax: RocCurveDisplay.from_predictions(y, proba, ax=ax),
        "pr_curve": lambda ax: PrecisionRecallDisplay.from_predictions(y, proba, ax=ax),
        "calibration": lambda ax: CalibrationDisplay.from_predictions(y, proba, n_bins=10, ax=ax),
        "confusion_matrix": lambda ax: ConfusionMatrixDisplay.from_predictions(y, labels, ax=ax),
    }


def regression_plots(y: np.ndarray, pred: np.ndarray, halfwidth: float | None) -> dict[str, Draw]:
    """Predicted against actual values (the diagonal is a perfect model) and the residuals against
    the predicted value (the prediction interval's half-width dashed, when the model has one)."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)

    def predicted_vs_actual(ax) -> None:
        ax.scatter(y, pred, s=4, alpha=0.4)
        ends = [min(y.min(), pred.min()), max(y.max(), pred.max())]
        ax.plot(ends, ends, color="grey", lw=0.8)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")

    def residuals(ax) -> None:
        ax.scatter(pred, y - pred, s=4, alpha=0.4)
        ax.axhline(0, color="grey", lw=0.8)
        if halfwidth is not None:
            for bound in (-halfwidth, halfwidth):
                ax.axhline(bound, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual − predicted")

    return {"predicted_vs_actual": predicted_vs_actual, "residuals": residuals}


def explanation_plots(importance: list[dict], contributions: np.ndarray, x: np.ndarray, names: list[str],
                      units: str) -> dict[str, Draw]:  # fmt: skip
    """The top 15 features by mean |SHAP| (bars), and each one's SHAP values coloured by the feature's value."""
    top = importance[:15][::-1]

    def bars(ax) -> None:
        ax.barh([r["feature"] for r in top], [r["mean_abs_shap"] for r in top])
        ax.set_xlabel(f"mean |SHAP| ({units})")

    def beeswarm(ax) -> None:
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
        ax.set_xlabel(f"SHAP value ({units}); colour: feature value low → high")

    return {"feature_importance": bars, "shap_summary": beeswarm}


def save(folder: Path, drawings: dict[str, Draw]) -> list[Path]:
    """Each drawing as `<folder>/<stem>.png`."""
    import matplotlib  # lazy: ~1 s and a backend choice

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, draw in drawings.items():
        fig, ax = plt.subplots(figsize=(6, 5))
        draw(ax)
        fig.tight_layout()
        path = folder / f"{stem}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
