"""The real service against hostile input: bodies over the limit without a length, unknown paths by
the thousand, oversize batches, junk request ids, unknown fields, the optional API key, compressed
and Parquet bombs, a header or a JSON key given twice, a body that trickles in. Every figure comes
from a real `bentoml serve` over HTTP."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import socket
import subprocess
import time
import uuid
from urllib.parse import urlparse

import httpx
import polars as pl
import psutil
import pytest

from tasks.core.spec import load_spec
from tasks.stores.snapshots import read_split
from tests.conftest import CONFIGS
from tests.serving.server import bento_server, logged_rows

TELCO = load_spec(CONFIGS / "telco_churn.yaml")
LIMIT = 4 * 1024 * 1024
BATCH_ROWS = 64  # LIFECYCLE_BATCH_MAX_SIZE's default: /predict_batched takes at most one batch
KEY = "k3y-for-the-test"
FILE_LIMIT = 1_000_000
BODY_TIMEOUT = 2  # the locked server's LIFECYCLE_BODY_TIMEOUT_SECONDS
CSV = {"content-type": "text/csv"}
PARQUET = {"content-type": "application/vnd.apache.parquet"}


def _records(result, n: int) -> list[dict]:
    test = read_split(result.prepare.manifest_path, "test")
    return test.select(TELCO.base_features).head(n).to_dicts()


def _chunked(total: int, chunk: bytes = b" " * 65536):
    """A body of `total` bytes from a generator: httpx sends it chunked, with no Content-Length."""
    for _ in range(total // len(chunk)):
        yield chunk
    yield b" " * (total % len(chunk))


def _served_by(url: str) -> list[psutil.Process]:
    """The `bentoml serve` process listening on `url`'s port and every process under it."""
    port = str(urlparse(url).port)
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        launched = "serve" in cmd or "tasks.stores.bento_server" in cmd  # bentoml's CLI, or our launcher of it
        if launched and "--port" in cmd and cmd[cmd.index("--port") + 1] == port:
            return [proc, *proc.children(recursive=True)]
    raise LookupError(f"no bentoml serve on port {port}")


def _predictions_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("lifecycle_predictions_total{")
    )


def _still_serves(url: str, record: dict, headers: dict | None = None) -> None:
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    response = httpx.post(f"{url}/predict", json={"records": [record]}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("path", "size"), [("predict", 5_000_000), ("feedback", 40_000_000)])
def test_a_chunked_body_over_the_limit_gets_413(telco_server, path, size):
    url = telco_server["url"]
    response = httpx.post(
        f"{url}/{path}", content=_chunked(size), headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 413, response.text
    assert str(LIMIT) in response.json()["error"]
    _still_serves(url, _records(telco_server["result"], 1)[0])


def test_a_chunked_body_under_the_limit_is_served(telco_server):
    url, records = telco_server["url"], _records(telco_server["result"], 3)
    body = json.dumps({"records": records}).encode()
    response = httpx.post(
        f"{url}/predict", content=iter([body[:100], body[100:]]), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3


def test_unknown_paths_get_404_and_leave_metrics_and_memory_bounded(telco_server):
    url = telco_server["url"]
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(100):  # warm up: the first answers allocate what every later one reuses
            client.get(f"/warm/{uuid.uuid4().hex}")
        lines_before = len(client.get("/metrics").text.splitlines())
        rss_before = {p.pid: p.memory_info().rss for p in _served_by(url)}
        statuses = {client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code for _ in range(3000)}
        lines_after = len(client.get("/metrics").text.splitlines())
        rss_after = {p.pid: p.memory_info().rss for p in _served_by(url)}
        assert client.get("/docs.json").status_code == 200
        assert client.get("/static_content/index.css").status_code == 200
        assert client.get("/static_content/no-such-file.css").status_code == 404
    assert statuses == {404}
    # before the guard sat outside BentoML's metrics middleware: 624 → 60,624 lines, +158-210 MB
    assert lines_after - lines_before <= 5, (lines_before, lines_after)
    growth_mb = {pid: (rss_after[pid] - rss_before[pid]) / 2**20 for pid in rss_before if pid in rss_after}
    assert max(growth_mb.values()) < 25, growth_mb


def test_answered_requests_leave_no_memory_behind(telco_server, tmp_path):
    """BentoML kept a timer per request for the whole 120 s timeout, holding the request's context:
    ~2.4 KB a request (20,000 calls of a typed endpoint: ~+48 MB, growing until the timers
    fired). With `AnsweredTimeout` the timer goes when the answer does."""
    url = telco_server["url"]
    body = tmp_path / "empty.json"
    body.write_text("{}")

    def hammer(n: int) -> None:
        cmd = ["hey", "-n", str(n), "-c", "32", "-m", "POST", "-T", "application/json", "-D", str(body)]
        out = subprocess.run([*cmd, f"{url}/model_info"], capture_output=True, text=True, check=True).stdout
        assert re.findall(r"\[(\d+)\]\s+(\d+) responses", out) == [("200", str(n))], out[-800:]

    hammer(32 * 64)  # warm up: what every later answer reuses (hey sends n // c requests a client)
    before = sum(p.memory_info().rss for p in _served_by(url))
    hammer(32 * 625)
    growth_mb = (sum(p.memory_info().rss for p in _served_by(url)) - before) / 2**20
    assert growth_mb < 20, growth_mb


def test_oversize_input_gets_400_naming_the_limit_never_5xx(telco_server):
    url, record = telco_server["url"], _records(telco_server["result"], 1)[0]
    for path, n, limit in [
        ("predict_batched", BATCH_ROWS + 1, BATCH_ROWS),
        ("predict_batched", 9000, BATCH_ROWS),
        ("predict", 9000, 1000),
        ("explain", 1001, 1000),
    ]:
        response = httpx.post(f"{url}/{path}", json={"records": [record] * n}, timeout=60)
        assert response.status_code == 400, (path, n, response.status_code, response.text[:300])
        detail = response.json()["detail"]
        assert detail[0]["type"] == "too_long" and f"at most {limit} items" in detail[0]["msg"], detail
    batched = httpx.post(f"{url}/predict_batched", json={"records": [record] * BATCH_ROWS}, timeout=60)
    assert batched.status_code == 200 and len(batched.json()) == BATCH_ROWS


@pytest.mark.parametrize("path", ["predict", "predict_batched", "explain", "feedback", "model_info"])
def test_an_unknown_top_level_field_gets_400_naming_it(telco_server, path):
    record = _records(telco_server["result"], 1)[0]
    payload = {"labels": [{"prediction_id": "x", "label": "No"}]} if path == "feedback" else {"records": [record]}
    payload = {} if path == "model_info" else payload
    response = httpx.post(f"{telco_server['url']}/{path}", json=payload | {"shoe_size": 42}, timeout=30)
    assert response.status_code == 400, response.text
    assert [(d["loc"], d["type"]) for d in response.json()["detail"]] == [(["shoe_size"], "extra_forbidden")]


def test_log_rows_and_counts_are_the_rows_clients_received(telco_server):
    url, result = telco_server["url"], telco_server["result"]
    records = _records(result, 40)
    good_record = records[0]
    bad_record = good_record | {"tenure": "twelve"}
    run = uuid.uuid4().hex[:8]
    counted_before = _predictions_counted(url)
    sent: dict[str, tuple[str, dict | bytes]] = {
        f"{run}-invalid": ("predict", {"records": [good_record, bad_record]}),
        f"{run}-too-many": ("predict", {"records": [good_record] * 1001}),
        f"{run}-extra": ("predict", {"records": [good_record], "extra": 1}),
        f"{run}-batched-too-many": ("predict_batched", {"records": [good_record] * 500}),
        f"{run}-good-1": ("predict", {"records": records[:7]}),
        f"{run}-good-2": ("predict", {"records": records[7:40]}),
        f"{run}-batched-good": ("predict_batched", {"records": records[:5]}),
    }
    huge = {"content-type": "application/json", "x-request-id": f"{run}-huge"}
    assert httpx.post(f"{url}/predict", content=_chunked(5_000_000), headers=huge, timeout=60).status_code == 413
    answered: dict[str, list[str]] = {}  # request id → the prediction ids the client received
    for rid, (path, payload) in sent.items():
        response = httpx.post(f"{url}/{path}", json=payload, headers={"x-request-id": rid}, timeout=60)
        if response.status_code == 200:
            body = response.json()
            answered[rid] = [p["prediction_id"] for p in (body if path == "predict_batched" else body["predictions"])]
        else:
            assert 400 <= response.status_code < 500, response.text
    assert sorted(answered) == [f"{run}-batched-good", f"{run}-good-1", f"{run}-good-2"]
    received = sum(len(ids) for ids in answered.values())
    assert received == 45
    # /predict logs the request id; /predict_batched (one model call for many requests) the prediction id
    keys = {rid for rid in sent if not rid.endswith("batched-good")} | {f"{run}-huge"}
    keys |= set(answered[f"{run}-batched-good"])
    logged = logged_rows(telco_server["logs"], TELCO.name, keys, want=received)
    assert logged.height == received, logged.group_by("request_id").len()
    per_request = {rid: sorted(g.get_column("prediction_id")) for (rid,), g in logged.group_by("request_id")}
    expected = {rid: sorted(ids) for rid, ids in answered.items() if "batched" not in rid}
    expected |= {pid: [pid] for pid in answered[f"{run}-batched-good"]}
    assert per_request == expected
    assert _predictions_counted(url) - counted_before == received


@pytest.mark.parametrize("sent", ["x" * 8000, "<script>alert(1)</script>", "../../etc/passwd", "a b", "x" * 129, ""])
def test_a_bad_request_id_is_replaced_not_echoed_or_logged(telco_server, sent):
    url, record = telco_server["url"], _records(telco_server["result"], 1)[0]
    response = httpx.post(f"{url}/predict", json={"records": [record]}, headers={"x-request-id": sent}, timeout=30)
    assert response.status_code == 200, response.text
    given = response.headers["x-request-id"]
    assert given != sent and len(given) == 32 and given.isalnum()
    assert response.json()["request_id"] == given
    logged = logged_rows(telco_server["logs"], TELCO.name, {given, sent}, want=1)
    assert logged.get_column("request_id").to_list() == [given]
    csv = pl.DataFrame([record]).write_csv().encode()
    scored = httpx.post(f"{url}/v1/score_file", content=csv, headers=CSV | {"x-request-id": sent}, timeout=30)
    assert scored.status_code == 200 and scored.headers["x-request-id"] != sent
    refused = httpx.post(f"{url}/predict", json={"records": []}, headers={"x-request-id": sent}, timeout=30)
    assert refused.status_code == 400 and refused.headers["x-request-id"] != sent


def test_a_valid_request_id_is_kept_on_every_endpoint(telco_server):
    url, record = telco_server["url"], _records(telco_server["result"], 1)[0]
    rid = "Order-42.retry:3_x"
    predicted = httpx.post(f"{url}/predict", json={"records": [record]}, headers={"x-request-id": rid}, timeout=30)
    assert predicted.headers["x-request-id"] == rid == predicted.json()["request_id"]
    csv = pl.DataFrame([record]).write_csv().encode()
    scored = httpx.post(f"{url}/v1/score_file", content=csv, headers=CSV | {"x-request-id": rid}, timeout=30)
    assert scored.headers["x-request-id"] == rid
    explained = httpx.post(f"{url}/explain", json={"records": [record]}, headers={"x-request-id": rid}, timeout=30)
    assert explained.headers["x-request-id"] == rid


@pytest.fixture(scope="module")
def locked_server(telco_lifecycle, tmp_path_factory):
    """A second server of the same bento, with an API key and a small bulk-file limit."""
    result, workdir = telco_lifecycle
    logs = tmp_path_factory.mktemp("predictions-locked")
    env = {
        "LIFECYCLE_PREDICTION_LOG_DIR": str(logs),
        "LIFECYCLE_API_KEY": KEY,
        "LIFECYCLE_MAX_FILE_BYTES": str(FILE_LIMIT),
        "LIFECYCLE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    with bento_server(result.package.bento_tag, workdir / "serve-locked.log", env) as url:
        yield {"url": url, "result": result}


def test_with_a_key_set_every_endpoint_but_the_probes_needs_it(locked_server):
    url, record = locked_server["url"], _records(locked_server["result"], 1)[0]
    for probe in ("/readyz", "/livez", "/healthz"):
        assert httpx.get(f"{url}{probe}", timeout=10).status_code == 200, probe
    for wrong in ({}, {"authorization": "Bearer nope"}, {"x-api-key": KEY[:-1]}, {"authorization": KEY}):
        response = httpx.post(f"{url}/predict", json={"records": [record]}, headers=wrong, timeout=30)
        assert response.status_code == 401, (wrong, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/metrics", "/docs.json", "/schema.json", "/"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 401, path
        assert httpx.get(f"{url}{path}", headers={"x-api-key": KEY}, timeout=10).status_code == 200, path
    csv = pl.DataFrame([record]).write_csv().encode()
    assert httpx.post(f"{url}/v1/score_file", content=csv, headers=CSV, timeout=30).status_code == 401
    for right in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
        _still_serves(url, record, right)
        assert httpx.post(f"{url}/v1/score_file", content=csv, headers=CSV | right, timeout=30).status_code == 200
        info = httpx.post(f"{url}/model_info", json={}, headers=right, timeout=30)
        assert info.status_code == 200, info.text


def test_the_bulk_file_limit_counts_the_bytes_read(locked_server):
    url, record = locked_server["url"], _records(locked_server["result"], 1)[0]
    auth = {"x-api-key": KEY} | CSV
    csv = pl.DataFrame([record] * 10).write_csv().encode()  # (the body below is refused by size, unparsed)
    streamed = httpx.post(f"{url}/v1/score_file", content=iter([csv[:50], csv[50:]]), headers=auth, timeout=30)
    assert streamed.status_code == 200, streamed.text
    assert pl.read_parquet(io.BytesIO(streamed.content)).height == 10
    big = httpx.post(f"{url}/v1/score_file", content=_chunked(3 * FILE_LIMIT), headers=auth, timeout=60)
    assert big.status_code == 413 and str(FILE_LIMIT) in big.json()["error"]
    _still_serves(url, record, {"x-api-key": KEY})


# -- bulk files: the declared format, no bomb, one meaning per column ---------------------------------
def _gzip_bomb(header: bytes) -> bytes:
    """~10 MB of gzip that decompresses to ~10 GB: one member of 100 MiB of zeros, repeated (RFC 1952
    allows many members; gzip tools read them all)."""
    member = gzip.compress(header + b"0" * (100 * 2**20), compresslevel=9)
    return member * (10_000_000 // len(member) + 1)


def _parquet_bomb(dictionary: bool) -> bytes:
    """300 rows of every input column, `tenure` one 1 MiB value, zstd pages: a few KB of file, 300 MiB
    of data (declared in the footer for plain pages; a one-value dictionary declares 1 MiB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    columns = {c: pa.array(["0"] * 300) for c in TELCO.base_features}
    table = pa.table(columns | {"tenure": pa.array(["0" * 2**20] * 300, type=pa.large_string())})
    pq.write_table(table, out, compression="zstd", use_dictionary=dictionary)
    return out.getvalue()


def _worker_rss(url: str) -> dict[int, int]:
    return {p.pid: p.memory_info().rss for p in _served_by(url)}


@pytest.mark.parametrize("bomb", ["gzip as text/csv", "gzip as Content-Encoding", "Parquet", "Parquet dictionary"])
def test_a_decompression_bomb_gets_4xx_at_once_and_leaves_the_worker_flat(telco_server, bomb):
    """10 MB of gzip once drove a worker to 6.6 GB (Polars decompressed it by its magic bytes)."""
    url = telco_server["url"]
    header = (",".join(TELCO.base_features) + "\n").encode()
    if bomb.startswith("gzip"):
        body = _gzip_bomb(header)
        assert len(body) > 10_000_000 and len(gzip.decompress(body[: body.index(b"\x1f\x8b", 2)])) > 100 * 2**20
        headers = CSV | ({"content-encoding": "gzip"} if "Encoding" in bomb else {})
        status, says = (415, "uncompressed body") if "Encoding" in bomb else (400, "gzip-compressed bytes")
    else:
        body = _parquet_bomb(dictionary="dictionary" in bomb)
        headers, status = PARQUET, 413
        says = "bytes decoded is over the" if "dictionary" in bomb else "bytes uncompressed is over the"
    assert len(body) < 11_000_000
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}/v1/score_file", content=b"x", headers=CSV)  # warm up the bulk path's first allocations
        before = _worker_rss(url)
        started = time.perf_counter()
        response = client.post(f"{url}/v1/score_file", content=body, headers=headers)
        took = time.perf_counter() - started
        after = _worker_rss(url)
    assert response.status_code == status and says in response.json()["error"], response.text
    assert took < 1.0, took
    growth_mb = {pid: (after[pid] - before[pid]) / 2**20 for pid in before if pid in after}
    assert max(growth_mb.values()) < 100, growth_mb
    _still_serves(url, _records(telco_server["result"], 1)[0])


def test_a_csv_over_the_row_limit_is_refused_before_it_is_parsed(telco_server):
    """2,000,001 rows (the default limit is 2,000,000): counted as lines, never parsed."""
    url = telco_server["url"]
    body = (",".join(TELCO.base_features) + "\n").encode() + b"0\n" * 2_000_001
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/score_file", content=body, headers=CSV, timeout=60)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "the request body: 2000001 lines of rows is over the 2000000-row limit"
    assert time.perf_counter() - started < 1.0


def test_the_content_type_decides_the_format_and_anything_else_gets_415(telco_server):
    url, records = telco_server["url"], _records(telco_server["result"], 3)
    csv, parquet = pl.DataFrame(records).write_csv().encode(), io.BytesIO()
    pl.DataFrame(records).write_parquet(parquet)
    for body, headers in (
        (csv, CSV),
        (parquet.getvalue(), PARQUET),
        (parquet.getvalue(), {"content-type": "application/x-parquet"}),
    ):
        response = httpx.post(f"{url}/v1/score_file", content=body, headers=headers, timeout=30)
        assert response.status_code == 200 and response.headers["x-rows-scored"] == "3", response.text
    accepted = "text/csv or application/vnd.apache.parquet or application/x-parquet"
    for headers, says in (
        ({}, f"takes Content-Type {accepted}, not none"),
        ({"content-type": "application/octet-stream"}, "not 'application/octet-stream'"),
        ({"content-type": "application/json"}, "not 'application/json'"),
        (CSV | {"content-encoding": "zstd"}, "an uncompressed body, not Content-Encoding 'zstd'"),
    ):
        response = httpx.post(f"{url}/v1/score_file", content=csv, headers=headers, timeout=30)
        assert response.status_code == 415 and says in response.json()["error"], (headers, response.text)
    as_csv = httpx.post(f"{url}/v1/score_file", content=parquet.getvalue(), headers=CSV, timeout=30)
    assert as_csv.status_code == 400 and "Parquet bytes (they start with PAR1), not CSV text" in as_csv.text
    as_parquet = httpx.post(f"{url}/v1/score_file", content=csv, headers=PARQUET, timeout=30)
    assert as_parquet.status_code == 400 and "not a readable Parquet file" in as_parquet.text


def test_a_column_named_twice_in_a_bulk_file_gets_400_naming_it(telco_server):
    """An extra `tenure` placed first used to become the model's `tenure`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    url, records = telco_server["url"], _records(telco_server["result"], 3)
    frame = pl.DataFrame(records)
    lines = frame.write_csv().splitlines()
    csv = "\n".join([f"tenure,{lines[0]}", *(f"99,{line}" for line in lines[1:])]).encode()
    parquet = io.BytesIO()
    table = frame.to_arrow()
    pq.write_table(pa.table([pa.array([99] * 3), *table.columns], names=["tenure", *table.column_names]), parquet)
    for body, headers in ((csv, CSV), (parquet.getvalue(), PARQUET)):
        response = httpx.post(f"{url}/v1/score_file", content=body, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        assert "the request body: the column 'tenure' is in the header 2 times" in response.json()["error"]


# -- JSON bodies: one value per key --------------------------------------------------------------------
@pytest.mark.parametrize("path", ["predict", "predict_batched", "explain", "feedback"])
def test_a_json_key_given_twice_gets_400_naming_it(telco_server, path):
    record = _records(telco_server["result"], 1)[0]
    body = json.dumps({"records": [record]})
    if path == "feedback":
        body = '{"labels": [{"prediction_id": "a", "label": "No", "label": "Yes"}]}'
        twice = "label"
    else:  # pydantic's parser keeps the last value silently
        body, twice = body.replace('"tenure": ', '"tenure": 1, "tenure": ', 1), "tenure"
    response = httpx.post(f"{telco_server['url']}/{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": f"the key '{twice}' is given twice in one JSON object: give each key once"}


# -- a body that trickles in ----------------------------------------------------------------------------
def test_a_body_that_trickles_in_is_cut_off_with_408(locked_server):
    """A byte a second: answered 408 once `LIFECYCLE_BODY_TIMEOUT_SECONDS` (2 s here) have passed, and
    the connection closed (it was still open after 150 s)."""
    url, record = locked_server["url"], _records(locked_server["result"], 1)[0]
    port = urlparse(url).port
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-api-key: {KEY}\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        started, answer = time.monotonic(), b""
        conn.settimeout(0.5)
        while time.monotonic() - started < 10 and b"\r\n\r\n" not in answer:
            with contextlib.suppress(OSError):  # closed after its answer: read what it said
                conn.sendall(b" ")
            try:
                answer += conn.recv(65536)
            except TimeoutError:
                continue
        took = time.monotonic() - started
        conn.settimeout(5)
        try:  # the body may follow the head in a later segment; the server then ends the connection
            while chunk := conn.recv(65536):  # (a reset is an end too)
                answer += chunk
        except ConnectionResetError:
            pass
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert BODY_TIMEOUT <= took < BODY_TIMEOUT + 2, took
        assert b"did not all arrive within 2 s" in answer, answer
    _still_serves(url, record, {"x-api-key": KEY})
