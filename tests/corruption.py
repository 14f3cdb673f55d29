"""Write real corrupted copies of a table, and remember which rows were broken how."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl


@dataclass
class Corruption:
    """Rows broken on purpose: row index → (column, the check that must catch it)."""

    frame: pl.DataFrame
    broken: dict[int, tuple[str, str]] = field(default_factory=dict)

    def set(self, rows: range, column: str, value: str | None, check: str) -> Corruption:
        values = self.frame.get_column(column).to_list()
        for r in rows:
            values[r] = value
            self.broken[r] = (column, check)
        self.frame = self.frame.with_columns(pl.Series(column, values, dtype=pl.String))
        return self

    def write(self, path: Path) -> Path:
        self.frame.write_csv(path)
        return path


def corrupt_telco(raw: pl.DataFrame) -> Corruption:
    """Every kind of bad input the data contract must catch, each on its own rows.

    Adds a `customer_id` column (unique) so duplicated ids can be planted too."""
    with_id = raw.with_columns(pl.format("C{}", pl.int_range(pl.len())).alias("customer_id"))
    c = Corruption(with_id.select(pl.all().cast(pl.String)))
    c.set(range(10, 15), "tenure", None, "not_nullable")  # null in a non-null column
    c.set(range(20, 25), "monthly_charges", "-5.0", "in_range")  # out of range
    c.set(range(30, 35), "tenure", "999", "in_range")  # out of range (int)
    c.set(range(40, 45), "contract", "Three year", "isin")  # unknown category
    c.set(range(50, 55), "monthly_charges", "twelve", "dtype(float)")  # wrong type
    c.set(range(60, 63), "tenure", "12.5", "dtype(int)")  # wrong type (not an integer)
    c.set(range(70, 73), "churn", "Maybe", "isin")  # unknown target label
    ids = c.frame.get_column("customer_id").to_list()
    for r in range(80, 84):  # duplicated ids: the first occurrence (row 79) is kept
        ids[r] = ids[79]
        c.broken[r] = ("customer_id", "field_uniqueness")
    c.frame = c.frame.with_columns(pl.Series("customer_id", ids))
    return c
