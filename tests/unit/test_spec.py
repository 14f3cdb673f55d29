import polars as pl
import pytest
import yaml

from tasks.core.errors import SpecError
from tasks.core.schema import build_schema
from tasks.core.spec import DatasetSpec, load_spec, read_yaml
from tests.conftest import CONFIGS, FIXTURES, ROOT


def _write(tmp_path, body: dict):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _minimal(**over):
    body = {
        "name": "t",
        "source": {"path": "t.csv"},
        "target": {"column": "y", "labels": ["n", "y"], "positive": "y"},
        "columns": {"x": {"type": "float", "min": 0, "max": 1}},
    }
    body.update(over)
    return body


def test_bundled_configs_load_and_build_schemas():
    for path in CONFIGS.glob("*.yaml"):
        spec = load_spec(path)
        schema = build_schema(spec)
        assert set(schema.columns) == set(spec.input_columns)
        assert spec.resolve(spec.source.path).is_file()


def test_every_bundled_yaml_file_loads_with_no_key_written_twice():
    files = [*CONFIGS.glob("*.yaml"), *FIXTURES.glob("*.yaml"), ROOT / "prefect.yaml"]
    files += [ROOT / "bentos" / "tabular" / "bentofile.yaml"]
    assert len(files) >= 7
    for path in files:
        assert isinstance(read_yaml(path), dict), path


_CONFIG = """name: t
source: {path: t.csv}
target: {column: y, labels: [n, y], positive: y}
columns:
  x: {type: float}
split:
  seed: 1
"""


@pytest.mark.parametrize(
    ("extra", "key", "line", "first"),
    [
        ("target: {column: y, labels: [n, y], positive: n}\n", "target", 8, 3),  # flipped the positive label
        ("split:\n  seed: 2\n  test: 0.3\n", "split", 8, 6),  # changed the seed and the test share
        ("evaluation:\n  protected: []\n  cv_folds: 3\n  protected: []\n", "protected", 11, 9),  # nested
    ],
)
def test_a_key_written_twice_is_an_error_naming_the_key_and_the_line(tmp_path, extra, key, line, first):
    path = tmp_path / "twice.yaml"
    path.write_text(_CONFIG + extra)
    with pytest.raises(SpecError, match=rf"^{path}, line {line}: key `{key}` is written twice .*first on line {first}"):
        load_spec(path)


def test_a_column_written_twice_is_refused_and_a_merge_may_override(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(_CONFIG.replace("  x: {type: float}\n", "  x: {type: float}\n  x: {type: int}\n"))
    with pytest.raises(SpecError, match=r"line 6: key `x` is written twice in one mapping \(first on line 5\)"):
        load_spec(path)
    path.write_text("base: &base {a: 1, b: 2}\nderived:\n  <<: *base\n  b: 3\n")
    assert read_yaml(path) == {"base": {"a": 1, "b": 2}, "derived": {"a": 1, "b": 3}}


def test_text_that_is_not_yaml_is_a_spec_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: t\nsource: {path: t.csv\n")
    with pytest.raises(SpecError, match=rf"^{path}: not valid YAML"):
        load_spec(path)


def test_relative_source_starts_from_the_config_folder(tmp_path):
    spec = load_spec(_write(tmp_path, _minimal()))
    assert spec.resolve(spec.source.path) == (tmp_path / "t.csv").resolve()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colums": {}}, "colums"),  # a typo is an error, not silently ignored
        ({"columns": {"x": {"type": "category"}}}, "needs `categories`"),
        ({"columns": {"x": {"type": "string"}}}, "cannot be a model feature"),
        ({"columns": {"x": {"type": "category", "categories": ["a"], "min": 1}}}, "min/max"),
        ({"target": {"column": "y", "labels": ["n", "y"], "positive": "maybe"}}, "positive label"),
        ({"target": {"column": "y", "task": "multiclass", "labels": ["a", "b", "c"]}}, "binary .* or regression"),
        ({"target": {"column": "y", "task": "regression", "min": 5, "max": 1}}, "min 5.0 > max 1.0"),
        ({"derived_features": [{"name": "d", "op": "ratio", "inputs": ["x", "z"]}]}, "unknown columns"),
        ({"derived_features": [{"name": "d", "op": "log1p", "inputs": ["x", "x"]}]}, "takes 1 input"),
        ({"split": {"strategy": "time"}}, "event_time_column"),
        ({"source": {"path": "a.csv", "uri": "sqlite://"}}, "exactly one"),
        ({"columns": {"y": {"type": "float"}}}, "do not list it"),
        ({"columns": {"x": {"type": "float", "sensitive": True}}}, "sensitive column cannot be a model feature"),
        (
            {
                "columns": {"x": {"type": "float"}, "s": {"type": "float", "feature": False, "sensitive": True}},
                "derived_features": [{"name": "d", "op": "ratio", "inputs": ["x", "s"]}],
            },
            "uses a sensitive column",
        ),
    ],
)
def test_invalid_configs_fail_with_a_clear_message(tmp_path, change, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, _minimal(**change)))


def test_missing_config_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_a_trial_budget_override_is_validated_like_the_config():
    assert load_spec(CONFIGS / "telco_churn.yaml", n_trials=4).training.n_trials == 4
    with pytest.raises(SpecError, match=r"training.n_trials\n.*greater than or equal to 1"):
        load_spec(CONFIGS / "telco_churn.yaml", n_trials=0)


def test_spec_hash_ignores_where_data_is_read_but_not_what_shapes_it(telco_spec):
    moved = telco_spec.with_source("/elsewhere/file.csv")
    assert moved.spec_hash == telco_spec.spec_hash
    assert moved.source.path == "/elsewhere/file.csv"
    reseeded = DatasetSpec.model_validate(
        telco_spec.model_dump() | {"split": telco_spec.split.model_dump() | {"seed": 1}}
    )
    assert reseeded.spec_hash != telco_spec.spec_hash


def test_the_order_of_the_columns_is_part_of_the_contract(telco_spec):
    """A config with the same columns in another order lays out snapshots differently: no shared cache."""
    body = telco_spec.model_dump()
    reordered = DatasetSpec.model_validate(body | {"columns": dict(sorted(body["columns"].items()))})
    assert list(reordered.columns) != list(telco_spec.columns)
    assert reordered.spec_hash != telco_spec.spec_hash
    assert reordered.cache_token() != telco_spec.cache_token()


def test_database_uri_override_keeps_the_query(telco_spec):
    with pytest.raises(SpecError, match="needs a `query`"):
        telco_spec.with_source("sqlite:///x.db")
    with_query = telco_spec.model_copy(
        update={"source": telco_spec.source.model_copy(update={"path": None, "uri": "sqlite://", "query": "select 1"})}
    )
    spec = with_query.with_source("postgresql://db/x")
    assert (spec.source.uri, spec.source.query, spec.source.path) == ("postgresql://db/x", "select 1", None)


def test_feature_names_follow_the_config(orders_spec):
    assert orders_spec.feature_names == [
        "amount_eur",
        "items",
        "channel",
        "express",
        "coupon",
        "amount_per_item",
        "log_amount",
    ]
    assert orders_spec.categorical_features == ["channel", "coupon"]
    assert orders_spec.input_columns[0] == "order_id"


def test_a_sensitive_column_is_declared_but_never_read(orders_spec):
    assert orders_spec.columns["note"].sensitive and "note" not in orders_spec.input_columns
    assert "note" not in build_schema(orders_spec).columns


# -- the target's task kind ----------------------------------------------------------------------
def _regression(**over):
    return _minimal(target={"column": "y", "task": "regression", "min": 0}, **over)


def test_a_regression_config_takes_its_tasks_defaults(tmp_path):
    spec = load_spec(_write(tmp_path, _regression()))
    assert (spec.target.task, spec.target.min, spec.target.max) == ("regression", 0.0, None)
    assert [(r.metric, r.vs) for r in spec.gate] == [("rmse", "champion"), ("rmse", "linear")]
    assert spec.monitoring.performance_metric == "rmse" and spec.split.strategy == "stratified"
    assert build_schema(spec).columns["y"].dtype.type == pl.Float64  # the target's contract: a number


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_regression(gate=[{"metric": "roc_auc", "min": 0.8}]), "gate metric 'roc_auc' is not a metric of a regr"),
        (_regression(gate=[{"metric": "rmse", "vs": "logistic_regression"}]), "vs 'logistic_regression'"),
        (_regression(monitoring={"performance_metric": "f1"}), "performance_metric 'f1': a regression target has"),
        (_regression(training={"calibration": "isotonic"}), "training.calibration does not apply to a regression"),
        (_minimal(gate=[{"metric": "rmse", "vs": "champion"}]), "gate metric 'rmse' is not a metric of a binary"),
        (_minimal(training={"objective": "l1"}), "training.objective does not apply to a binary target"),
        (_minimal(monitoring={"performance_metric": "rmse"}), "performance_metric 'rmse': a binary target has"),
        (_minimal(target={"column": "y", "task": "regression", "min": 5, "max": 1}), "target min 5.0 > max 1.0"),
        (_minimal(target={"column": "y", "task": "ranking"}), "ranking"),  # an unknown kind is named
        (_minimal(target={"column": "y", "task": "regression", "labels": ["n", "y"]}), "labels"),  # a binary field
        (_minimal(split={"strategy": "shuffled"}), "shuffled"),
    ],
)
def test_options_of_another_task_kind_are_refused_naming_them(tmp_path, body, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, body))


def test_telcos_hashes_do_not_move_with_the_task_options(telco_spec):
    """Options only a regression target reads are left out of a binary config's hashes (and the
    task field too): every snapshot and model of the binary configs keeps its cache key."""
    assert (telco_spec.spec_hash, telco_spec.training_hash, telco_spec.cache_token()) == (
        "8db7d880c157c136", "94d4d0c1ba2dc29f", "45c41019e4611a89"
    )  # fmt: skip
    assert "task" not in telco_spec.model_dump()["target"]
    coverage = DatasetSpec.model_validate(
        telco_spec.model_dump() | {"evaluation": telco_spec.evaluation.model_dump() | {"interval_coverage": 0.8}}
    )
    assert coverage.cache_token() == telco_spec.cache_token()  # a binary model carries no interval


def test_the_regression_sample_config_shows_every_regression_option():
    spec = load_spec(CONFIGS / "diamonds.yaml")
    assert (spec.target.task, spec.target.min, spec.split.strategy) == ("regression", 0.0, "stratified")
    assert (spec.training.objective, spec.evaluation.interval_coverage) == ("l2", 0.9)
    assert spec.monitoring.performance_metric == "rmse" and spec.evaluation.slices and spec.evaluation.protected
    assert {r.metric for r in spec.gate} >= {"rmse", "r2", "interval_coverage"}
    assert {r.vs for r in spec.gate} >= {"champion", "mean", "linear"}
