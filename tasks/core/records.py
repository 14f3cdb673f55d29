"""The request schema of the served model: one record as a pydantic model, generated from the spec."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from tasks.core.spec import ColumnSpec, DatasetSpec, column_kinds, memo, polars_dtype, typed_categories


def record_model(spec: DatasetSpec) -> type[BaseModel]:
    """A pydantic model of one input record, generated from the spec: types (strict), ranges,
    categories, nullability; unknown fields are rejected. Serving validates requests with it."""

    def annotation(col: ColumnSpec):
        if col.categories is not None:
            return Literal[tuple(typed_categories(col))]
        bounds = {"ge": col.min, "le": col.max}
        if col.type == "int":
            return Annotated[int, Field(strict=True, **bounds)]
        if col.type == "float":
            return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]
        if col.type == "bool":
            return Annotated[bool, Field(strict=True)]
        if col.type == "datetime":
            return datetime
        return Annotated[str, Field(max_length=10_000)]

    def build() -> type[BaseModel]:
        fields: dict = {}
        if spec.id_column:
            fields[spec.id_column] = (str | None, Field(default=None, max_length=256))
        for name, col in spec.columns.items():
            kind = annotation(col)
            required = col.feature and not col.nullable
            fields[name] = (kind, Field(description=col.description)) if required else (kind | None, None)
        title = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", spec.name)) + "Record"
        return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)

    return memo(spec, "record_model", build)


def label_model(spec: DatasetSpec) -> type[BaseModel]:
    """One delayed label as `/feedback` takes it: the `prediction_id` the service returned (or the
    config's id column), the label (one of the target's labels) and, optionally, when it was observed.
    The same rules as `tasks.core.feedback.validate_labels` applies to label files."""
    keys = [k for k in ("prediction_id", spec.id_column) if k]

    def one_key(self):
        if all(getattr(self, k) in (None, "") for k in keys):
            raise ValueError(f"a label needs {' or '.join(keys)}")
        return self

    def build() -> type[BaseModel]:
        fields: dict = {k: (str | None, Field(default=None, min_length=1, max_length=256)) for k in keys}
        fields["label"] = (Literal[tuple(spec.target.labels)], Field(description=f"the true `{spec.target.column}`"))
        fields["observed_at"] = (datetime | None, Field(default=None, description="when the truth was observed"))
        return create_model(
            "Label",
            __config__=ConfigDict(extra="forbid"),
            __validators__={"one_key": model_validator(mode="after")(one_key)},
            **fields,
        )

    return memo(spec, "label_model", build)


def records_frame(records: list[dict], spec: DatasetSpec) -> pl.DataFrame:
    """Validated records → a frame typed as the spec declares (no parsing needed)."""

    def build() -> dict:
        kinds = column_kinds(spec)
        return {c: polars_dtype(kinds[c]) for c in (spec.id_column, *spec.columns) if c}

    schema = memo(spec, "record_schema", build)
    return pl.DataFrame(records, schema=schema, orient="row") if records else pl.DataFrame(schema=schema)


def example_record(spec: DatasetSpec) -> dict:
    """A valid record built from the spec alone (mid-range numbers, first categories)."""
    record: dict = {}
    for name, col in spec.columns.items():
        if not col.feature:
            continue
        if col.categories is not None:
            record[name] = typed_categories(col)[0]
        elif col.type in ("int", "float"):
            lo = col.min if col.min is not None else 0.0
            hi = col.max if col.max is not None else lo + 2.0
            mid = (lo + hi) / 2
            record[name] = int(mid) if col.type == "int" else float(mid)
        elif col.type == "bool":
            record[name] = False
    return record
