"""The model's content hash (tasks.core.integrity): one digest over a sorted manifest of files,
and a refusal that names the files that differ."""

from __future__ import annotations

import pytest

from tasks.core.errors import DataError, ModelIntegrityError
from tasks.core.integrity import check_model_files, manifest_digest, model_manifest


def _model(folder):
    (folder / "artifacts" / "model").mkdir(parents=True)
    (folder / "code" / "tasks" / "core").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "pyfunc_model.py").write_text("print('model')\n")
    (folder / "artifacts" / "model" / "booster.txt").write_text("tree\n")
    (folder / "artifacts" / "model" / "model.json").write_text("{}")
    (folder / "code" / "tasks" / "core" / "model.py").write_text("X = 1\n")
    (folder / "requirements.txt").write_text("mlflow\n")  # not part of what a load runs
    return folder


def test_the_manifest_names_what_a_load_runs_and_reads(tmp_path):
    manifest = model_manifest(_model(tmp_path))
    assert list(manifest) == sorted(manifest) == [
        "MLmodel", "artifacts/model/booster.txt", "artifacts/model/model.json",
        "code/tasks/core/model.py", "pyfunc_model.py",
    ]  # fmt: skip
    assert len(manifest_digest(manifest)) == 64


def test_bytecode_written_on_import_does_not_change_the_hash(tmp_path):
    folder = _model(tmp_path)
    before = manifest_digest(model_manifest(folder))
    (folder / "code" / "tasks" / "core" / "__pycache__").mkdir()
    (folder / "code" / "tasks" / "core" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\x00")
    assert manifest_digest(model_manifest(folder)) == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda f: (f / "artifacts/model/booster.txt").write_text("tref\n"),
            "changed: ['artifacts/model/booster.txt']",
        ),
        (lambda f: (f / "artifacts/model/model.json").write_text("{ }"), "changed: ['artifacts/model/model.json']"),
        (lambda f: (f / "code/tasks/core/model.py").write_text("X = 2\n"), "changed: ['code/tasks/core/model.py']"),
        (lambda f: (f / "code/tasks/core/evil.py").write_text(""), "unexpected: ['code/tasks/core/evil.py']"),
        (lambda f: (f / "pyfunc_model.py").unlink(), "missing: ['pyfunc_model.py']"),
    ],
)
def test_a_tampered_model_is_refused_naming_the_model_and_the_files(tmp_path, change, named):
    folder = _model(tmp_path)
    recorded = model_manifest(folder)
    expected = check_model_files(folder, manifest_digest(recorded), recorded, "orders v3")
    change(folder)
    with pytest.raises(ModelIntegrityError, match=r"orders v3: the model files .* do not match") as err:
        check_model_files(folder, expected, recorded, "orders v3")
    assert named in str(err.value)
    assert isinstance(err.value, DataError)  # deterministic: never retried


def test_a_model_without_a_recorded_hash_is_refused(tmp_path):
    with pytest.raises(ModelIntegrityError, match="no content hash recorded"):
        check_model_files(_model(tmp_path), None, None, "orders v1")


def test_baselines_are_stored_without_pickle_and_load_only_scikit_learn_types(tmp_path, monkeypatch):
    import os

    import mlflow
    import numpy as np
    import skops.io
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from tasks.stores import registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = registry.default_tracking(tmp_path, "baselines", "baselines")
    x, y = np.random.default_rng(0).normal(size=(60, 3)), np.arange(60) % 2
    fitted = {"majority_class": DummyClassifier(strategy="prior").fit(x, y),
              "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)}  # fmt: skip
    with mlflow.start_run(experiment_id=cfg.activate()) as run:
        for name, model in fitted.items():
            registry.save_baseline(cfg, run.info.run_id, model, name)
        # a baseline file that would run code of another module when loaded
        hostile = tmp_path / "hostile.skops"
        skops.io.dump(make_pipeline(FunctionTransformer(os.getcwd)), hostile)
    stored = list((tmp_path / "mlruns").rglob("*")) if (tmp_path / "mlruns").exists() else list(tmp_path.rglob("*"))
    assert not [p for p in stored if p.is_file() and p.suffix in {".joblib", ".pkl", ".pickle"}]
    for name, model in fitted.items():
        loaded = registry.load_baseline(cfg, run.info.run_id, name)
        assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))

    import shutil

    with mlflow.start_run(experiment_id=cfg.activate()) as other:
        target = tmp_path / "upload"
        target.mkdir()
        shutil.copy(hostile, target / "logistic_regression.skops")
        cfg.client().log_artifact(other.info.run_id, str(target / "logistic_regression.skops"), "baselines")
    with pytest.raises(ModelIntegrityError, match="outside scikit-learn"):
        registry.load_baseline(cfg, other.info.run_id, "logistic_regression")
