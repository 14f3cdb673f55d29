"""The model card's tables: each task kind declares its columns (`CardLayout`), and every table is
written the same way here. Pure text; the evaluate phase writes the card around them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIGURE = "figure"  # four decimals, "–" when missing or NaN
JUDGED = "judged"  # "yes", or "too few rows"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    format: str = FIGURE  # FIGURE, JUDGED, "" (as text) or a format spec (".3f", "+.3f", "d")


@dataclass(frozen=True)
class CardLayout:
    """What a task kind's model card and evaluation artifacts show."""

    metrics: tuple[str, ...]  # the card's test-metrics columns (every model on the same rows)
    headline: tuple[str, ...]  # the test-metrics artifact's columns
    cv_title: str  # the metric cross-validation reports, as the card names it
    plots: dict[str, str]  # plot file stem → title, shown with the card (before the SHAP summary)
    contribution_units: str  # what a SHAP contribution is measured in
    slices: tuple[Column, ...]  # per slice, after its column and value
    error_heading: str
    errors: tuple[Column, ...]
    fairness_heading: str  # with `{column}`
    fairness_description: str  # the fairness artifact's description, with `{column}`
    fairness: tuple[Column, ...]


def figure(value) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def cell(value, fmt: str) -> str:
    if fmt == FIGURE:
        return figure(value)
    if fmt == JUDGED:
        return "yes" if value else "too few rows"
    return format(value, fmt)


def markdown_table(columns: tuple[Column, ...], rows: list[dict], empty: str = "") -> str:
    """A Markdown table of `rows` (one line each, a trailing newline); `empty` stands in the first
    cell of the one line when there are no rows."""
    head = "| " + " | ".join(c.header for c in columns) + " |\n|" + "---|" * len(columns) + "\n"
    if not rows and empty:
        return head + f"| – | {empty} |" + " |" * (len(columns) - 2) + "\n"
    return head + "".join("| " + " | ".join(cell(r[c.key], c.format) for c in columns) + " |\n" for r in rows)
