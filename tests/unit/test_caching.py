from types import SimpleNamespace

import polars as pl

from tasks.common import content_key, retry_unless_data_error
from tasks.core.errors import QuarantineToleranceExceeded
from tasks.stores.snapshots import SourceFingerprint


def _ctx():
    def fn():
        return 1

    return SimpleNamespace(task=SimpleNamespace(fn=fn, source_code="def fn(): return 1"))


def _fp(sha: str) -> SourceFingerprint:
    return SourceFingerprint(location="x.csv", sha256=sha, size_bytes=1)


def test_key_follows_the_content_token_not_the_frame():
    big = pl.DataFrame({"a": range(1000)})
    other = pl.DataFrame({"a": [1]})
    k1 = content_key(_ctx(), {"frame": big, "fingerprint": _fp("aa")})
    assert k1 == content_key(_ctx(), {"frame": other, "fingerprint": _fp("aa")})
    assert k1 != content_key(_ctx(), {"frame": big, "fingerprint": _fp("bb")})


def test_no_token_means_no_cache():
    assert content_key(_ctx(), {"frame": pl.DataFrame({"a": [1]}), "n": 3}) is None


def test_scalars_and_paths_are_part_of_the_key(tmp_path):
    fp = _fp("aa")
    assert content_key(_ctx(), {"fingerprint": fp, "n": 1}) != content_key(_ctx(), {"fingerprint": fp, "n": 2})
    assert content_key(_ctx(), {"fingerprint": fp, "p": tmp_path}) != content_key(
        _ctx(), {"fingerprint": fp, "p": tmp_path / "x"}
    )


def test_data_errors_are_not_retried_but_io_errors_are():
    def state(exc):
        return SimpleNamespace(result=lambda raise_on_failure: exc)

    assert not retry_unless_data_error(None, None, state(QuarantineToleranceExceeded("bad rows")))
    assert retry_unless_data_error(None, None, state(OSError("disk busy")))


def test_a_training_override_changes_the_key_of_a_task_taking_the_spec(telco_spec):
    from tasks.core.spec import load_spec
    from tests.conftest import CONFIGS

    fewer = load_spec(CONFIGS / "telco_churn.yaml", n_trials=3)
    assert fewer.spec_hash == telco_spec.spec_hash  # same prepared data ...
    fp = _fp("aa")
    assert content_key(_ctx(), {"spec": telco_spec, "fingerprint": fp}) != content_key(
        _ctx(), {"spec": fewer, "fingerprint": fp}
    )  # ... but not the same training
