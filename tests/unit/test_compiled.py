"""The compiled booster (tasks.core.compiled, real lleaves): the booster's outputs (probabilities, and
regression values in the target's units), cached by the booster's hash, refused when its files
differ, optional everywhere, and checked by the gate."""

from __future__ import annotations

import hashlib

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from tasks.core.cast import clean
from tasks.core.compiled import (
    SWITCH,
    CompiledUnavailable,
    compile_booster,
    compiled_for,
    load_compiled,
    max_abs_difference,
    portable_cpu,
    sha256_of,
    verified_compiled,
)
from tasks.core.errors import DataError, ModelIntegrityError
from tasks.core.features import add_features, encode_target, feature_matrix
from tasks.core.gate import COMPILED_RULE, GateRule, promotion
from tasks.core.model import TabularModel
from tasks.core.records import example_records, record_model, records_frame
from tasks.core.task.kinds import task_of
from tasks.evaluate import COMPILED_DIFF, Scores, gate_task
from tasks.results import EvaluationResult
from tasks.stores.bentos import COMPILED_OBJECT, STORED_BOOSTER, package_compiled
from tests.conftest import FIXTURES

FEATURES = 6
CATEGORICAL = [0, 1]


def random_matrix(rows: int, seed: int) -> np.ndarray:
    """Numbers with NaNs; two category columns (codes 0–4, some missing, some never seen in training)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    x[:, CATEGORICAL] = rng.integers(0, 5, size=(rows, len(CATEGORICAL)))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def _signal(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x[:, 2]) - np.nan_to_num(x[:, 3]) + (x[:, 0] == 2) + np.isnan(x[:, 4])


def train(seed: int, trees: int = 8) -> str:
    x = random_matrix(3000, seed)
    y = (_signal(x) + np.random.default_rng(seed).normal(size=len(x)) > 0.5).astype(int)
    params = {"objective": "binary", "num_leaves": 8, "verbosity": -1, "num_threads": 1, "seed": seed}
    data = lgb.Dataset(x, y, categorical_feature=CATEGORICAL, params={"verbosity": -1})
    return lgb.train(params, data, num_boost_round=trees).model_to_string()


def train_regression(objective: str, trees: int) -> str:
    """Prices: skewed, in the thousands (where float sums of many trees drift furthest from each other)."""
    x = random_matrix(3000, seed=3)
    y = np.exp(8 + 0.8 * _signal(x) + np.random.default_rng(3).normal(scale=0.3, size=len(x)))
    params = {"objective": objective, "num_leaves": 15, "verbosity": -1, "num_threads": 1, "seed": 3}
    data = lgb.Dataset(x, y, categorical_feature=CATEGORICAL, params={"verbosity": -1})
    return lgb.train(params, data, num_boost_round=trees).model_to_string()


@pytest.fixture(scope="module")
def booster_text() -> str:
    return train(seed=1)


@pytest.fixture
def compiled_files(booster_text, tmp_path):
    cache = tmp_path / "cache"
    info, reason = compile_booster(booster_text, cache)
    assert reason == "" and info is not None
    booster_file = tmp_path / "booster.txt"
    booster_file.write_text(booster_text)
    return booster_file, cache / info["file"], info


def test_the_compiled_model_scores_as_the_booster_on_10k_rows_with_nans(compiled_files, booster_text):
    booster_file, object_file, info = compiled_files
    compiled = load_compiled(booster_file, object_file, info)
    booster = lgb.Booster(model_str=booster_text)
    x = random_matrix(10_000, seed=2)
    x[:50, CATEGORICAL] = 9  # a category code training never saw
    assert np.isnan(x).any()
    assert max_abs_difference(compiled, booster, x) <= 1e-12  # threads: 10k rows is a big batch
    assert max_abs_difference(compiled, booster, x[:100]) <= 1e-12  # one thread
    assert compiled.predict(x[:1]).shape == (1,) and compiled.predict(x[:0]).shape == (0,)
    assert compiled.predict(np.asfortranarray(x[:10].astype(np.float32))).dtype == np.float64  # copied to C order
    assert info["cpu"] == portable_cpu() and info["booster_sha256"] == hashlib.sha256(booster_text.encode()).hexdigest()
    assert info["sha256"] == sha256_of(object_file)
    assert compiled.description == f"compiled (lleaves {info['lleaves']}, {info['cpu']})"


@pytest.mark.parametrize("objective", ["regression", "regression_l1", "huber"])
def test_a_regression_booster_compiles_and_scores_as_the_booster_in_the_targets_units(objective, tmp_path):
    """lleaves applies no link to a regression objective's sum, as LightGBM: values in the thousands
    agree within the parity check's 1e-9 on 10k rows (threads) and on a few (one thread)."""
    text = train_regression(objective, trees=40)
    compiled, reason = compiled_for(text, tmp_path)
    assert reason == "" and compiled is not None
    booster = lgb.Booster(model_str=text)
    x = random_matrix(10_000, seed=4)
    assert np.median(booster.predict(x)) > 1000  # values in the target's units, no sigmoid
    assert max_abs_difference(compiled, booster, x) <= 1e-9
    assert max_abs_difference(compiled, booster, x[:100]) <= 1e-9


def test_a_matrix_of_the_wrong_width_is_refused_before_the_machine_code_reads_it(compiled_files):
    compiled = load_compiled(*compiled_files)
    with pytest.raises(DataError, match=f"\\(rows, {FEATURES}\\)"):
        compiled.predict(np.zeros((3, FEATURES - 1)))
    with pytest.raises(DataError):
        compiled.predict(np.zeros(FEATURES))


def test_the_object_file_is_cached_by_the_booster_hash(compiled_files, booster_text):
    _, object_file, info = compiled_files
    cache = object_file.parent
    before = object_file.stat().st_mtime_ns
    again, reason = compile_booster(booster_text, cache)
    assert (again, reason) == (info, "")
    assert object_file.stat().st_mtime_ns == before
    assert object_file.name.startswith(info["booster_sha256"][:16]) and info["triple"] in object_file.name
    assert sorted(p.name for p in cache.iterdir()) == [object_file.name, f"{object_file.name}.sha256"]  # no leftovers
    other, _ = compile_booster(train(seed=3), cache)
    assert other["file"] != info["file"]


def test_a_damaged_cache_file_is_compiled_again(compiled_files, booster_text):
    _, object_file, info = compiled_files
    object_file.write_bytes(object_file.read_bytes()[:100])  # e.g. a copy cut short
    again, _ = compile_booster(booster_text, object_file.parent)
    assert again == info and sha256_of(object_file) == info["sha256"]


def test_a_tampered_object_file_or_booster_is_refused_naming_the_file(compiled_files, tmp_path):
    booster_file, object_file, info = compiled_files
    tampered = tmp_path / "model.o"
    data = bytearray(object_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=str(tampered)):
        load_compiled(booster_file, tampered, info)
    booster_file.write_text(booster_file.read_text().replace("\n", "\n\n", 1))
    with pytest.raises(ModelIntegrityError, match=str(booster_file)):
        load_compiled(booster_file, object_file, info)
    with pytest.raises(ModelIntegrityError):  # refused, never a quiet fallback to the booster
        verified_compiled(booster_file, object_file, info, None, np.zeros((1, FEATURES)))


def test_another_platform_or_version_is_unavailable_and_the_booster_serves(compiled_files, booster_text):
    booster_file, object_file, info = compiled_files
    for key, value in (("triple", "aarch64-unknown-linux-gnu"), ("lleaves", "0.0.1"), ("llvmlite", "0.1")):
        with pytest.raises(CompiledUnavailable, match=f"{key} {value}"):
            load_compiled(booster_file, object_file, info | {key: value})
    booster = lgb.Booster(model_str=booster_text)
    compiled, why = verified_compiled(booster_file, object_file, info | {"triple": "x"}, booster, random_matrix(5, 0))
    assert compiled is None and "another platform" in why


def test_an_object_file_of_another_booster_fails_the_parity_check(compiled_files, booster_text, tmp_path):
    """The hashes tie the files to `info`, not `info` to the booster: parity catches a mix-up."""
    booster_file, _, _ = compiled_files
    other, _ = compile_booster(train(seed=4), tmp_path / "cache")
    mixed = other | {"booster_sha256": sha256_of(booster_file)}
    booster = lgb.Booster(model_str=booster_text)
    compiled, why = verified_compiled(
        booster_file, tmp_path / "cache" / other["file"], mixed, booster, random_matrix(100, 0)
    )
    assert compiled is None and "max |compiled − booster|" in why


def test_switched_off_nothing_is_compiled_or_loaded(compiled_files, booster_text, tmp_path, monkeypatch):
    monkeypatch.setenv(SWITCH, "off")
    assert compile_booster(booster_text, tmp_path / "other") == (None, "switched off by LIFECYCLE_COMPILED=off")
    assert not (tmp_path / "other").exists()
    assert compiled_for(booster_text, tmp_path / "other") == (None, "switched off by LIFECYCLE_COMPILED=off")
    with pytest.raises(CompiledUnavailable, match="switched off"):
        load_compiled(*compiled_files)


@pytest.fixture(scope="module")
def orders_model(orders_spec):
    """A real TabularModel (features, categories) on the orders fixture, a few trees."""
    raw = pl.read_csv(FIXTURES / "orders.csv", infer_schema=False)
    rows = clean(raw, orders_spec)
    frame = add_features(rows, orders_spec)
    categorical = [orders_spec.feature_names.index(c) for c in orders_spec.categorical_features]
    data = lgb.Dataset(
        feature_matrix(frame, orders_spec),
        encode_target(frame, orders_spec),
        categorical_feature=categorical,
        params={"verbosity": -1, "min_data_in_leaf": 5},
    )
    booster = lgb.train({"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5}, data, num_boost_round=5)
    decision = task_of(orders_spec).decision_from_json({"threshold": 0.5})
    return TabularModel(orders_spec, booster.model_to_string(), decision, {}), rows


def test_the_model_uses_the_compiled_form_when_set_and_the_booster_otherwise(orders_model, tmp_path, monkeypatch):
    model, rows = orders_model
    by_booster = model.booster.predict(model.matrix(rows), num_threads=1)
    assert model.compiled is None and np.array_equal(model.predict_scores(rows), by_booster)
    model.compiled, reason = compiled_for(model.booster_text, tmp_path)
    try:
        assert reason == "" and model.compiled is not None
        assert np.abs(model.predict_scores(rows) - by_booster).max() <= 1e-12
        varied = records_frame(example_records(model.spec, 200, seed=5), model.spec)
        served = model.predict_frame(varied)["probability"].to_numpy()
        assert np.abs(served - model.booster.predict(model.matrix(varied))).max() <= 1e-12
        monkeypatch.setenv(SWITCH, "off")
        model.compiled, reason = compiled_for(model.booster_text, tmp_path)
        assert model.compiled is None and "switched off" in reason
        assert np.array_equal(model.predict_scores(rows), by_booster)  # the booster, exactly as before
    finally:
        model.compiled = None


def test_a_regression_model_answers_its_value_and_interval_alike_from_either_predictor(diamonds_spec, tmp_path):
    """Diamonds prices: the compiled model's answer is the booster's (1e-9, in dollars), the interval is
    the value ± the conformal half-width, and a row not scored (NaN) has no interval."""
    raw = pl.read_csv(diamonds_spec.resolve(diamonds_spec.source.path), infer_schema=False, n_rows=3000)
    frame = add_features(clean(raw, diamonds_spec), diamonds_spec)
    task = task_of(diamonds_spec)
    categorical = [diamonds_spec.feature_names.index(c) for c in diamonds_spec.categorical_features]
    data = lgb.Dataset(feature_matrix(frame, diamonds_spec), task.encode(frame.get_column("price")),
                       categorical_feature=categorical, params={"verbosity": -1})  # fmt: skip
    booster = lgb.train(task.lgb_params() | {"verbosity": -1, "num_threads": 1}, data, num_boost_round=40)
    decision = task.decision_from_json({"interval": {"halfwidth": 250.0, "coverage": 0.9}})
    model = TabularModel(diamonds_spec, booster.model_to_string(), decision, {})
    by_booster = model.predict_frame(frame)
    model.compiled, reason = compiled_for(model.booster_text, tmp_path)
    assert reason == "" and model.compiled is not None
    by_compiled = model.predict_frame(frame)
    assert by_compiled.columns == ["prediction", "interval_low", "interval_high"] == list(task.answer_schema(decision))
    value = by_compiled.get_column("prediction").to_numpy()
    assert np.abs(value - by_booster.get_column("prediction").to_numpy()).max() <= 1e-9
    assert np.array_equal(by_compiled.get_column("interval_low").to_numpy(), value - 250.0)
    assert np.array_equal(by_compiled.get_column("interval_high").to_numpy(), value + 250.0)
    assert 300 < np.median(value) < 20_000  # dollars, as the target
    unscored = model.answer_columns(np.array([1000.0, np.nan]))
    assert unscored["interval_low"].to_list() == [750.0, None] and unscored["interval_high"].to_list() == [1250.0, None]


def test_varied_example_records_are_valid_requests(orders_spec):
    record = record_model(orders_spec)
    rows = example_records(orders_spec, 100, seed=0)
    assert len({tuple(sorted(r.items(), key=str)) for r in rows}) > 90
    assert all(record.model_validate(r) for r in rows)
    assert any(r["coupon"] is None for r in rows) and {r["channel"] for r in rows} == {"web", "app", "store"}


def _scores(candidate: dict, unavailable: str = "") -> Scores:
    return Scores(candidate, {}, None, None, False, [], unavailable)


@pytest.mark.parametrize(
    ("difference", "unavailable", "passed", "detail"),
    [
        (2e-16, "", True, "max |compiled − booster| = 2e-16 on the test rows"),
        (1e-9, "", True, "max |compiled − booster| = 1e-09 on the test rows"),
        (3e-6, "", False, "max |compiled − booster| = 3e-06 on the test rows"),
        (float("inf"), "", False, "max |compiled − booster| = inf on the test rows"),
        (None, "switched off by LIFECYCLE_COMPILED=off", True, "no compiled model here (switched off by "),
    ],
)
def test_the_gate_checks_compiled_parity_after_the_configs_rules(orders_spec, difference, unavailable, passed, detail):
    spec = orders_spec.model_copy(update={"gate": [GateRule(metric="roc_auc", min=0.5)]})
    candidate = {"roc_auc": 0.9} | ({COMPILED_DIFF: difference} if difference is not None else {})
    decision = gate_task.fn(spec, _scores(candidate, unavailable), {})
    assert [c.rule for c in decision.checks] == ["roc_auc >= 0.5", COMPILED_RULE]
    check = decision.checks[-1]
    assert (check.passed, decision.passed) == (passed, passed) and check.detail.startswith(detail)
    assert promotion("2", "1", decision.passed) == ("promote" if passed else "keep")
    if difference is None:
        assert check.detail.endswith("serving uses the booster")


def test_the_parity_check_survives_a_recorded_evaluation(orders_spec):
    """A re-run reuses the recorded EvaluationResult: the check and the figure come back with it."""
    decision = gate_task.fn(orders_spec, _scores({"roc_auc": 0.9, COMPILED_DIFF: 4e-17}), {})
    result = EvaluationResult(
        dataset="orders", data_version="d", run_id="r", threshold=0.5, candidate={"roc_auc": 0.9, COMPILED_DIFF: 4e-17},
        baselines={}, champion=None, champion_version=None, candidate_is_champion=False, gate=decision,
    )  # fmt: skip
    reused = EvaluationResult.model_validate_json(result.model_dump_json())
    assert reused.gate.checks[-1].rule == COMPILED_RULE and reused.gate.checks[-1].passed
    assert reused.candidate[COMPILED_DIFF] == 4e-17


def test_packaging_reuses_the_gates_object_file_and_records_it(orders_model, tmp_path, monkeypatch):
    stored, cache, staging = tmp_path / "stored", tmp_path / "compiled", tmp_path / "staging"
    model, _ = orders_model
    model.save(stored / STORED_BOOSTER.parent)  # the TabularModel's files, where a stored BentoML model has them
    staging.mkdir()
    gate_info, _ = compile_booster(model.booster_text, cache)  # what the gate compiled
    mtime = (cache / gate_info["file"]).stat().st_mtime_ns
    assert package_compiled(stored, cache, staging) == gate_info
    assert (cache / gate_info["file"]).stat().st_mtime_ns == mtime
    assert sha256_of(staging / COMPILED_OBJECT) == gate_info["sha256"]
    load_compiled(stored / STORED_BOOSTER, staging / COMPILED_OBJECT, gate_info)
    monkeypatch.setenv(SWITCH, "off")
    assert package_compiled(stored, cache, tmp_path) == {"unavailable": "switched off by LIFECYCLE_COMPILED=off"}


def test_a_booster_lleaves_cannot_compile_leaves_the_booster_serving_and_no_files(tmp_path):
    info, reason = compile_booster("tree\nversion=v4\nnum_class=1\n", tmp_path)
    assert info is None and reason.startswith("lleaves could not compile the booster: ")
    assert list(tmp_path.iterdir()) == []
