"""The comparators every task kind fits beside the candidate, on the same rows and features: a
linear model whose regularisation is chosen on the validation split (as the candidate's parameters
are, so the comparison is fair) and a shallow decision tree. Each kind picks the estimators
(classifier or regressor) and the dummies; scikit-learn is imported inside the functions (~1 s:
only training needs it, a serving worker never does)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tasks.core.task import Task

LINEAR_STRENGTHS = (0.01, 0.1, 1.0, 10.0)  # candidate regularisation values (C for logistic, alpha for ridge)
TREE_DEPTH, TREE_MIN_LEAF = 4, 20


def linear_features(n_features: int, categorical: list[int]):
    """Numeric columns median-imputed and scaled; categorical codes imputed and one-hot encoded."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [i for i in range(n_features) if i not in categorical]
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         categorical),
    ])  # fmt: skip


def linear_model(
    task: Task,
    estimator: Callable[[float], Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    categorical: list[int],
    strengths: Sequence[float] = LINEAR_STRENGTHS,
):
    """`estimator(strength)` on `linear_features` for each strength, fitted on the training split; the
    one with the best validation `task.validation_metric` (the first of equals)."""
    from sklearn.pipeline import make_pipeline

    metric, higher = task.metric_function(task.validation_metric), task.better(task.validation_metric)
    best, best_score = None, float("nan")
    for strength in strengths:
        model = make_pipeline(linear_features(x_train.shape[1], categorical), estimator(strength))
        model.fit(x_train, y_train)
        score = metric(y_val, task.baseline_scores(model, x_val))
        if best is None or (score > best_score if higher else score < best_score):
            best, best_score = model, score
    return best


def shallow_tree(estimator: Callable[..., Any], x_train: np.ndarray, y_train: np.ndarray, seed: int):
    """A decision tree of depth 4 (`estimator` is the classifier or regressor class) on the same
    features, missing values median-imputed."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    tree = estimator(max_depth=TREE_DEPTH, min_samples_leaf=TREE_MIN_LEAF, random_state=seed)
    return make_pipeline(SimpleImputer(strategy="median"), tree).fit(x_train, y_train)
