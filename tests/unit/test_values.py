"""One rule for values on every path: the request model (`/predict`, `/feedback`) and the file
path's cast and schema (prepare, `/v1/score_file`, monitoring) are two evaluators of one
declaration, so they accept and reject the same values, and agree on the typed value."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tasks.core.errors import DataError, SpecError
from tasks.core.records import example_record, label_model, record_model
from tasks.core.schema import typed_with_failures
from tasks.core.spec import DatasetSpec, load_spec
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def coded_spec() -> DatasetSpec:
    return load_spec(FIXTURES / "coded.yaml")


POOL = [None, 0, 1, 3, 5, 6, 25, 50, 51, -1, 0.0, 1.0, 2.5, 3.0, 5000.0, 5000.01, 1e9, True, False]
POOL += ["", " ", "1", " 1 ", "2", "1.0", "3", "web", " web ", "WEB", "app\t", "NONE", "vip", "north", "abc"]
JSON_TYPES = {"int": (int, float), "float": (int, float), "bool": (bool,), "category": (str, int, float)}


def as_text(value) -> str | None:
    """How a file holds a JSON value: text (a CSV cell), true/false, numbers as Python prints them."""
    if isinstance(value, bool):
        return str(value).lower()
    return None if value is None else str(value)


def file_verdict(spec: DatasetSpec, name: str, value):
    """The file path: the cell's text through the cast and the schema → (accepted, typed value)."""
    raw = pl.DataFrame({name: [as_text(value)]}, schema={name: pl.String})
    typed, failures = typed_with_failures(raw, spec, [name])
    return failures.is_empty(), typed.item(0, name)


def request_verdict(spec: DatasetSpec, name: str, value):
    record = example_record(spec) | {name: value}
    try:
        return True, record_model(spec).model_validate(record).model_dump()[name]
    except ValidationError as exc:
        assert {e["loc"][0] for e in exc.errors()} == {name}, exc
        return False, None


def json_type_fits(kind: str, value) -> bool:
    """The documented strictness of JSON types: numbers (never true/false) for int and float, true/false
    for bool, text or a number for a category; null for any (nullability decides)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, JSON_TYPES[kind])


@pytest.mark.parametrize("dataset", ["orders", "coded"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_request_model_and_the_file_cast_give_the_same_verdict(dataset, data, orders_spec, coded_spec):
    spec = {"orders": orders_spec, "coded": coded_spec}[dataset]
    name = data.draw(st.sampled_from(spec.base_features))
    value = data.draw(st.sampled_from(POOL))
    ok, typed = request_verdict(spec, name, value)
    file_ok, file_typed = file_verdict(spec, name, value)
    if not json_type_fits(spec.columns[name].type, value):
        assert not ok, (name, value)  # a request is never looser than its JSON type
        return
    assert ok == file_ok, (name, value, typed, file_typed)
    if ok:
        assert typed == file_typed, (name, value)


def test_text_values_are_trimmed_on_every_path(orders_spec):
    assert (
        request_verdict(orders_spec, "channel", " web ")
        == (True, "web")
        == file_verdict(orders_spec, "channel", " web ")
    )
    assert label_model(orders_spec).model_validate({"order_id": " O-1 ", "label": " kept "}).label == "kept"


def test_true_and_false_are_not_numbers(coded_spec, orders_spec):
    for spec, name in ((coded_spec, "smoker"), (coded_spec, "age"), (coded_spec, "income"), (orders_spec, "items")):
        assert request_verdict(spec, name, True)[0] is False and request_verdict(spec, name, False)[0] is False


def test_integer_codes_are_taken_as_numbers_or_their_text(coded_spec):
    for value in (1, "1", " 1 "):
        assert request_verdict(coded_spec, "marital", value) == (True, "1")
    for value in (1.0, 6, "01", True):
        assert request_verdict(coded_spec, "marital", value)[0] is False


def test_numeric_target_labels_need_no_quotes_and_are_the_tables_text(coded_spec):
    assert coded_spec.target.labels == ["0", "1"] and coded_spec.target.positive == "1"
    labels = label_model(coded_spec)
    assert labels.model_validate({"applicant": 1001, "label": 1}).label == "1"
    assert labels.model_validate({"applicant": "1001", "label": "0"}).label == "0"
    with pytest.raises(ValidationError):
        labels.model_validate({"applicant": 1001, "label": 2})
    with pytest.raises(ValidationError, match="true/false"):
        DatasetSpec.model_validate(
            coded_spec.model_dump() | {"target": {"column": "y", "labels": [True, False], "positive": True}}
        )


def test_an_integer_id_is_sent_as_a_number_and_carried_as_its_text(coded_spec):
    model = record_model(coded_spec)
    record = example_record(coded_spec)
    assert model.model_validate(record | {"applicant": 1042}).applicant == "1042"
    assert model.model_validate(record | {"applicant": " 1042 "}).applicant == "1042"
    for bad in ("A-1", 1.5, True):
        with pytest.raises(ValidationError):
            model.model_validate(record | {"applicant": bad})
    raw = pl.DataFrame({"applicant": ["1042", " 7 ", "x"]})
    typed, failures = typed_with_failures(raw, coded_spec, ["applicant"])
    assert typed.get_column("applicant").to_list()[:2] == ["1042", "7"]
    assert failures.rows() == [(2, "applicant", "dtype(int)", "x")]


def test_the_coded_table_prepares_with_no_quarantine(coded_spec):
    from tasks.core.cast import clean
    from tasks.stores.snapshots import read_source

    raw = read_source(coded_spec)
    failures = typed_with_failures(raw, coded_spec)[1]
    assert raw.height == 200 and failures.is_empty()
    typed = clean(raw, coded_spec)
    assert set(typed.get_column("defaulted").unique()) == {"0", "1"}
    assert typed.schema["marital"] == pl.String and typed.schema["applicant"] == pl.String


def test_a_data_error_is_what_a_spec_error_is():
    assert issubclass(SpecError, DataError)
