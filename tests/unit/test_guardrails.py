"""Guardrail figures and verdicts, the roll-out plan, nginx routes and the process limits."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from functools import partial

import httpx
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from scipy.stats import ks_2samp

from blocks import RolloutSettings
from tasks.core.guardrails import Tally, VersionFigures, judge, ks_statistic, live_metric
from tasks.core.spec import Guardrails, RolloutPlan
from tasks.core.task.kinds import task_of
from tasks.rollout import _paired
from tasks.settings import merged_plan
from tasks.stores.backends import free_port, memory_bytes, process_limits
from tasks.stores.proxy import AccessLog, Lock, Route, nginx_binary, nginx_conf, point_proxy, stop_proxy, wait_drained

RAILS = Guardrails(max_error_rate=0.05, max_p95_ms=100, max_prediction_shift=0.2, min_requests=20)
samples = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=200)


@pytest.fixture
def auc_worse(telco_spec):
    """How much worse a binary challenger's live ROC AUC is than the champion's: the drop."""
    return partial(task_of(telco_spec).shortfall, "roc_auc")


@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_ks_statistic_is_scipys(a, b):
    assert ks_statistic(np.array(a), np.array(b)) == pytest.approx(ks_2samp(a, b, method="asymp").statistic, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.2, 60_000, allow_nan=False), min_size=1, max_size=500))
def test_p95_is_the_true_p95_rounded_up_to_its_5_percent_bucket(times):
    tally = Tally()
    for ms in times:
        tally.add(200, ms)
    exact = np.sort(times)[int(np.ceil(0.95 * len(times))) - 1]
    assert exact <= tally.p95_ms() <= exact * 1.05 + 1e-9
    assert tally.histogram.size == 330  # fixed whatever the traffic


def test_errors_are_5xx_and_timeouts_not_4xx():
    tally = Tally()
    for status in (200, 400, 404, 413, 429, 499, 500, 502, 504):
        tally.add(status, 1)
    assert (tally.requests, tally.errors) == (9, 4)


def _figures(requests=100, errors=0, p95=50.0, rows=100, version="2") -> VersionFigures:
    return VersionFigures(version=version, requests=requests, errors=errors, p95_ms=p95, rows_scored=rows)


def test_healthy_figures_break_nothing(auc_worse):
    assert judge(_figures(), _figures(version="1"), 0.05, RAILS, final=True, min_labels=100, shortfall=auc_worse) == []


def test_each_rail_names_what_it_saw(auc_worse):
    old = _figures(version="1")
    assert "error rate 0.100" in judge(_figures(errors=10), old, 0.0, RAILS, True, 100, auc_worse)[0]
    assert "p95 150 ms" in judge(_figures(p95=150), old, 0.0, RAILS, True, 100, auc_worse)[0]
    assert "prediction shift 0.300" in judge(_figures(), old, 0.3, RAILS, True, 100, auc_worse)[0]


def test_too_little_to_judge_fails_closed_only_at_the_end_of_a_step(auc_worse):
    few = _figures(requests=5, p95=None, rows=5)
    assert judge(few, _figures(version="1"), None, RAILS, False, 100, auc_worse) == []
    breaches = judge(few, _figures(version="1"), None, RAILS, True, 100, auc_worse)
    assert any("only 5 answers" in b for b in breaches) and any("not computable" in b for b in breaches)


def test_errors_break_early_once_there_are_a_few(auc_worse):
    assert judge(_figures(requests=6, errors=3), None, None, RAILS, False, 1, auc_worse)
    assert judge(_figures(requests=4, errors=2), None, None, RAILS, False, 1, auc_worse) == []  # 2 may be luck


def test_the_live_metric_is_judged_when_asked_and_fails_closed_without_labels(auc_worse):
    rails = RAILS.model_copy(update={"max_live_metric_drop": 0.02})
    new, old = _figures(), _figures(version="1")
    new.live_metric, old.live_metric = 0.80, 0.85
    assert "live metric 0.8000 vs 0.8500" in judge(new, old, 0.0, rails, True, 100, auc_worse)[0]
    new.live_metric = 0.84
    assert judge(new, old, 0.0, rails, True, 100, auc_worse) == []
    new.live_metric = None
    assert "live metric not computable" in judge(new, old, 0.0, rails, True, 100, auc_worse)[0]


def test_an_error_metric_rolls_back_when_it_rises_by_more_than_the_fraction(diamonds_spec):
    """rmse: higher is worse, and the limit is a fraction of the champion's (500 → 530 is 6% worse)."""
    rails = RAILS.model_copy(update={"max_live_metric_drop": 0.05})
    rmse_worse = partial(task_of(diamonds_spec).shortfall, "rmse")
    new, old = _figures(), _figures(version="1")
    new.live_metric, old.live_metric = 530.0, 500.0
    assert judge(new, old, 0.0, rails, True, 100, rmse_worse) == [
        "live metric 530.0000 vs 500.0000 of v1: worse by 0.06, over 0.05"
    ]
    new.live_metric = 520.0  # 4% worse: within
    assert judge(new, old, 0.0, rails, True, 100, rmse_worse) == []
    new.live_metric = 300.0  # far lower: better, whatever the gap
    assert judge(new, old, 0.0, rails, True, 100, rmse_worse) == []


def test_a_version_s_live_metric_is_measured_on_its_labelled_answers(telco_spec, diamonds_spec):
    served = pl.DataFrame({
        "probability": [0.9, 0.4, 0.6, 0.1, 0.8], "label": ["Yes", "No", "Yes", "No", "Yes"],
        "churn": ["Yes", "Yes", "No", "No", None],  # the last one's label has not arrived
    })  # fmt: skip
    assert live_metric(served, telco_spec, "accuracy") == (0.5, 4)  # threshold metrics: the label answered
    assert live_metric(served, telco_spec, "roc_auc") == (0.75, 4)  # ranking metrics: the probability
    prices = pl.DataFrame({"prediction": [110.0, 190.0, 330.0, 400.0], "price": ["100", "200", "300", "400"]})
    assert live_metric(prices, diamonds_spec, "rmse") == (pytest.approx((1100 / 4) ** 0.5), 4)
    assert live_metric(prices, diamonds_spec, "mae") == (12.5, 4)
    assert live_metric(prices.with_columns(pl.lit(None, pl.String).alias("price")), diamonds_spec, "rmse") == (None, 0)


def test_shadow_agreement_pairs_the_same_requests_and_asks_the_task(telco_spec, diamonds_spec):
    new = pl.DataFrame({"request_id": ["a", "a", "b", "c"], "probability": [0.9, 0.2, 0.6, 0.7],
                        "label": ["Yes", "No", "Yes", "Yes"]})  # fmt: skip
    old = pl.DataFrame({"request_id": ["b", "a", "a"], "probability": [0.4, 0.8, 0.3], "label": ["No", "Yes", "Yes"]})
    paired_new, paired_old = _paired(new, old)  # c: only the new one answered it
    pairs = zip(paired_new.get_column("probability"), paired_old.get_column("probability"), strict=True)
    assert sorted(pairs) == [(0.2, 0.3), (0.6, 0.4), (0.9, 0.8)] and paired_old.columns == ["probability", "label"]
    assert task_of(telco_spec).agreement(paired_new, paired_old) == pytest.approx(1 / 3)
    values = pl.DataFrame({"prediction": [100.0, 180.0]})
    interval = pl.DataFrame(
        {"prediction": [105.0, 150.0], "interval_low": [90.0, 140.0], "interval_high": [120.0, 160.0]}
    )
    assert task_of(diamonds_spec).agreement(values, interval) == 0.5  # inside the old interval: 100 yes, 180 no
    assert task_of(diamonds_spec).agreement(values, interval.select("prediction")) is None  # no interval: no measure


@pytest.mark.parametrize("steps", [[10, 50], [50, 10, 100], [0, 100], [10, 10, 100], [10, 150]])
def test_canary_steps_must_rise_to_100(steps):
    with pytest.raises(ValidationError, match="steps"):
        RolloutPlan(steps=steps)


def test_the_parameter_beats_the_block_beats_the_config_field_by_field():
    config = RolloutPlan(watch_seconds=60, guardrails={"max_p95_ms": 300, "min_requests": 10})
    block = RolloutSettings(strategy="canary", guardrails={"max_error_rate": 0.5})
    plan = merged_plan(config, block, RolloutSettings(steps=[20, 100]))
    assert (plan.strategy, plan.steps, plan.watch_seconds) == ("canary", [20, 100], 60)
    assert (plan.guardrails.max_error_rate, plan.guardrails.max_p95_ms, plan.guardrails.min_requests) == (0.5, 300, 10)
    with pytest.raises(ValidationError):
        merged_plan(config, RolloutSettings(steps=[20, 50]))
    with pytest.raises(ValidationError):
        RolloutSettings(stratgy="canary")  # a typo is an error, not a silent default


ROUTES = {
    "blue-green": Route(live=9001),
    "canary": Route(live=9001, canary=9002, percent=12.5),
    "sticky canary": Route(live=9001, canary=9002, percent=10, sticky_header="X-Customer-Id"),
    "shadow": Route(live=9001, shadow=9002),
}


@pytest.mark.parametrize("name", list(ROUTES))
@pytest.mark.parametrize("locked", [False, True], ids=["open", "locked"])
def test_every_route_is_a_config_nginx_accepts(tmp_path, name, locked):
    route = ROUTES[name].model_copy(update={"access_log": tmp_path / "steps.jsonl"})
    lock = Lock.bearer(SecretStr("k" * 20)) if locked else None
    conf = tmp_path / "nginx.conf"
    (tmp_path / "logs").mkdir()
    conf.write_text(nginx_conf(tmp_path, 39999, route, lock))
    test = subprocess.run([nginx_binary(), "-p", str(tmp_path), "-c", str(conf), "-t"], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    text = conf.read_text()
    assert "listen 127.0.0.1:39999" in text and "log_format lifecycle" in text
    if name == "canary":
        assert 'split_clients "$request_id" $lifecycle_upstream { 12.5% canary; * live; }' in text
    if name == "sticky canary":
        assert "map $http_x_customer_id $lifecycle_split_key" in text
    if name == "shadow":
        assert "location ~ ^/(predict|predict_batched)$" in text and text.count("mirror /_lifecycle_shadow;") == 1
    if locked:  # every proxied location but the probes checks the key first
        assert text.count("if ($lifecycle_denied)") == (2 if name == "shadow" else 1)


def test_the_access_log_is_read_whole_lines_at_a_time(tmp_path):
    path = tmp_path / "a.jsonl"
    line = {"t": 1.0, "status": 200, "upstream": "127.0.0.1:9002", "rt": 0.020, "urt": "0.015"}
    path.write_text(json.dumps(line) + "\n" + json.dumps(line | {"status": 401, "upstream": "-"}) + '\n{"t": 2')
    log = AccessLog(path)
    assert log.read() == [(9002, 200, 15.0)]  # nginx's own 401 names no back-end; the half line waits
    with path.open("a") as f:
        f.write(', "status": 504, "upstream": "127.0.0.1:9001", "rt": 30.0, "urt": "-"}\n')
    assert log.read() == [(9001, 504, 30000.0)]
    assert log.read() == []


def test_memory_limits_read_docker_notation():
    assert [memory_bytes(m) for m in ("512m", "2g", "2G", "1024", "64kb")] == [2**29, 2**31, 2**31, 1024, 65536]
    with pytest.raises(ValueError, match="2 gigs"):
        memory_bytes("2 gigs")


def test_a_process_back_end_runs_within_its_cpu_and_memory_limits():
    apply = process_limits({"nano_cpus": int(0.5e9), "mem_limit": "1g"})
    code = "import os, resource; print(len(os.sched_getaffinity(0)), resource.getrlimit(resource.RLIMIT_AS)[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=apply, check=True)
    assert out.stdout.split() == ["1", str(2**30)]
    assert process_limits({}) is None


def test_drained_means_the_old_workers_finished_their_requests(tmp_path):
    """Asked straight after a reload (before the old worker has even heard of it), the proxy is
    drained only once the request the old worker holds has its answer."""
    asked = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.set()
            time.sleep(1.5)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    folder, port = tmp_path / "endpoint", free_port()
    answers: list[int] = []
    try:
        point_proxy(folder, port, Route(live=upstream.server_port))
        url = f"http://127.0.0.1:{port}/"
        client = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=10).status_code))
        client.start()
        assert asked.wait(5)
        point_proxy(folder, port, Route(live=free_port()))  # a graceful reload: the old worker shuts down
        assert wait_drained(folder, timeout=15)
        assert answers == [200]
        client.join()
    finally:
        stop_proxy(folder)
        upstream.shutdown()
