"""The request schema of the served model: one record as a pydantic model, generated from the spec."""

from __future__ import annotations

import math
import random
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Literal

import polars as pl
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from tasks.core.cast import NOT_FINITE
from tasks.core.spec import ColumnSpec, DatasetSpec, column_kinds, memo, polars_dtype, text_form, typed_categories


# -- JSON values as the table has them (the same verdicts as the file path's cast and schema) ------
def _number(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number, not true/false")
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN/Infinity, before any range check
        raise PydanticCustomError(NOT_FINITE, "Input should be a finite number, not NaN or infinity (null if missing)")
    return value


def _whole(value: object) -> object:
    """An int column takes a JSON integer, or a float with no fraction (3.0), as a file's "3.0" is."""
    value = _number(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _as_float(value: object) -> object:
    value = _number(value)
    return float(value) if isinstance(value, int) else value


def _stripped(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# What an id (a prediction id, the config's id column) may not hold: control characters (NUL, a line
# break, ...), format and private-use characters, separators but the plain space. The same rule as a
# Polars pattern, for label files.
NOT_PRINTABLE = r"[\p{Cc}\p{Cf}\p{Co}\p{Z}&&[^ ]]"
_NOT_PRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Zs"})


def _printable(value: str) -> str:
    if value.isprintable():  # the common case, in C (it implies the rule)
        return value
    bad = next((c for c in value if c != " " and unicodedata.category(c) in _NOT_PRINTABLE_CATEGORIES), None)
    if bad is not None:
        raise PydanticCustomError(
            "printable", "Input should be printable characters only, not U+{code:04X}", {"code": ord(bad)}
        )
    return value


def _id_text(value: object) -> object:
    """An int id: a JSON integer or its text ("42", " 42 "), carried as its text "42"."""
    value = _whole(_stripped(value))
    if isinstance(value, str) and value.lstrip("+-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError("a whole number")
    return str(value)


def annotation(col: ColumnSpec):
    """The pydantic type of one column's JSON value: numbers for int/float (never true/false),
    true/false for bool, text or a number standing for its text for a category (trimmed), text for
    a string (trimmed); ranges, categories and the strictness of each type."""
    if col.categories is not None:
        cats = tuple(typed_categories(col))
        before = {"int": _whole, "float": _as_float, "bool": lambda v: v}.get(col.type, text_form)
        return Annotated[Literal[cats], BeforeValidator(before)]
    bounds = {"ge": col.min, "le": col.max}
    if col.type == "int":
        return Annotated[int, BeforeValidator(_whole), Field(strict=True, **bounds)]
    if col.type == "float":
        return Annotated[float, BeforeValidator(_number), Field(strict=True, allow_inf_nan=False, **bounds)]
    if col.type == "bool":
        return Annotated[bool, Field(strict=True)]
    if col.type == "datetime":
        return Annotated[datetime, BeforeValidator(_stripped)]
    return Annotated[str, BeforeValidator(_stripped), Field(max_length=10_000)]


def id_annotation(spec: DatasetSpec):
    if spec.id_type == "int":
        return Annotated[str, BeforeValidator(_id_text), Field(max_length=256)]
    return Annotated[str, BeforeValidator(_stripped), Field(max_length=256), AfterValidator(_printable)]


def record_model(spec: DatasetSpec) -> type[BaseModel]:
    """A pydantic model of one input record, generated from the spec: types (strict), ranges,
    categories, nullability; unknown fields are rejected. Serving validates requests with it."""

    def build() -> type[BaseModel]:
        fields: dict = {}
        if spec.id_column:
            fields[spec.id_column] = (id_annotation(spec) | None, Field(default=None))
        for name, col in spec.columns.items():
            kind = annotation(col)
            required = col.feature and not col.nullable
            fields[name] = (kind, Field(description=col.description)) if required else (kind | None, None)
        title = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", spec.name)) + "Record"
        return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)

    return memo(spec, "record_model", build)


# A label's `observed_at` decides which label of a key wins (the latest observed), so one from the
# future would beat every later correction: past this allowance for clocks that disagree, it is
# refused (400 at /feedback, quarantined in a label file). The one rule for both paths.
MAX_CLOCK_SKEW_SECONDS = 300.0
IN_THE_FUTURE = f"in the future (more than {MAX_CLOCK_SKEW_SECONDS:.0f} s after it was received)"


def observed_in_future(observed_at, received_at):
    """Whether `observed_at` is later than `received_at` by more than the clock-skew allowance (epoch
    seconds: numbers, or Polars expressions)."""
    return observed_at > received_at + MAX_CLOCK_SKEW_SECONDS


def _not_in_future(when: datetime) -> datetime:
    when = when if when.tzinfo else when.replace(tzinfo=UTC)  # naive times are UTC, as stored
    if observed_in_future(when.timestamp(), time.time()):
        raise PydanticCustomError("in_the_future", f"Input should not be {IN_THE_FUTURE}")
    return when


def label_model(spec: DatasetSpec) -> type[BaseModel]:
    """One delayed label as `/feedback` takes it: the `prediction_id` the service returned (or the
    config's id column), the label (a value the target's contract takes) and, optionally, when it was observed.
    The same rules as `tasks.core.feedback.validate_labels` applies to label files."""
    keys = [k for k in ("prediction_id", spec.id_column) if k]

    def one_key(self):
        if all(getattr(self, k) in (None, "") for k in keys):
            raise ValueError(f"a label needs {' or '.join(keys)}")
        return self

    def build() -> type[BaseModel]:
        key = Annotated[
            str, BeforeValidator(_stripped), Field(min_length=1, max_length=256), AfterValidator(_printable)
        ]
        fields: dict = {"prediction_id": (key | None, None)}
        if spec.id_column:
            fields[spec.id_column] = (id_annotation(spec) | None, None)
        # the target's contract, as a feature's value is checked: one of the labels (a number stands for
        # its text), or a finite number within the target's bounds
        label = annotation(spec.target.as_column())
        fields["label"] = (label, Field(description=f"the true `{spec.target.column}`"))
        observed = Annotated[datetime, AfterValidator(_not_in_future)]
        fields["observed_at"] = (
            observed | None,
            Field(default=None, description="when the truth was observed (naive: UTC); not in the future"),
        )
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


def example_records(spec: DatasetSpec, rows: int, seed: int = 0) -> list[dict]:
    """`rows` valid records varied from `example_record`: every category, numbers across their
    range, missing values where a column allows them."""
    rng = random.Random(seed)
    records = []
    for _ in range(rows):
        record = example_record(spec)
        for name, col in spec.columns.items():
            if name not in record:
                continue
            if col.nullable and rng.random() < 0.1:
                record[name] = None
            elif col.categories is not None:
                record[name] = rng.choice(typed_categories(col))
            elif col.type in ("int", "float"):
                lo = col.min if col.min is not None else record[name] - 100.0
                hi = col.max if col.max is not None else record[name] + 100.0
                value = rng.uniform(lo, hi)
                record[name] = min(max(round(value), math.ceil(lo)), math.floor(hi)) if col.type == "int" else value
            elif col.type == "bool":
                record[name] = rng.random() < 0.5
        records.append(record)
    return records


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
