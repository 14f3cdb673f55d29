"""The stable endpoint's keep-alive policy: through real nginx reloads no request fails and none is
served twice; against a scripted server, only a reused connection closed before any byte of an
answer is retried, once."""

from __future__ import annotations

import http.server
import itertools
import select
import socket
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from tasks.stores.backends import free_port
from tasks.stores.keepalive import ReplayableBody, stable_client
from tasks.stores.proxy import Route, point_proxy, stop_proxy

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


def test_requests_across_reloads_all_answered_and_each_served_once(tmp_path):
    """Four clients through nginx while it reloads every 50 ms, until the policy has retried a
    few requests (each a connection the reload closed as it was reused): no error, and the
    upstream saw every request exactly once."""
    served: Counter[str] = Counter()
    lock = threading.Lock()

    class Upstream(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            with lock:
                served[self.headers["x-request-id"]] += 1
            self.wfile.write(ANSWER)

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    folder, port = tmp_path / "endpoint", free_port()
    stop = threading.Event()
    answered: list[str] = []
    retried: list[str] = []
    errors: list[str] = []

    def client() -> None:
        def on_retry(request: httpx.Request) -> None:
            retried.append(request.headers["x-request-id"])

        with stable_client(f"http://127.0.0.1:{port}", on_retry, timeout=10) as http_client:
            while not stop.is_set():
                rid = uuid.uuid4().hex
                try:
                    response = http_client.post("/predict", json={"records": [{}]}, headers={"x-request-id": rid})
                    if response.status_code == 200:
                        answered.append(rid)
                    else:
                        errors.append(f"{response.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        point_proxy(folder, port, Route(live=upstream.server_port))
        for c in clients:
            c.start()
        deadline = time.monotonic() + 30
        reloads = 0
        while len(retried) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            point_proxy(folder, port, Route(live=upstream.server_port))
            reloads += 1
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=15)
        stop_proxy(folder)
        upstream.shutdown()
    assert errors == []
    assert len(retried) >= 3, f"{reloads} reloads closed no reused connection: the race was not exercised"
    assert set(retried) <= set(answered)
    assert sorted(served) == sorted(answered) and set(served.values()) == {1}


class Scripted:
    """A server that treats request n of connection k as `scripts[k][n]` says: `answer`; `unread`
    (close without reading it, as an nginx worker a reload retired does); `read` (read it, close);
    `partial` (read it, send the status line, close); `stall` (read it, never answer)."""

    def __init__(self, *scripts: list[str]):
        self.scripts, self.requests = scripts, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        for script in self.scripts:
            conn, _ = self.listener.accept()
            with conn:
                for action in script:
                    if action == "unread":
                        select.select([conn], [], [], 5)
                        break
                    self.read_request(conn)
                    self.requests += 1
                    if action == "answer":
                        conn.sendall(ANSWER)
                    elif action == "partial":
                        conn.sendall(b"HTTP/1.1 200 OK\r\n")
                        time.sleep(0.2)
                        break
                    elif action == "stall":
                        time.sleep(2)
                        break
                    else:
                        break

    @staticmethod
    def read_request(conn: socket.socket) -> None:
        """Headers, then a body of `content-length` bytes or chunks up to the last (empty) one."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        lengths = [int(h.split(b":")[1]) for h in head.lower().split(b"\r\n") if h.startswith(b"content-length")]
        while (len(body) < lengths[0]) if lengths else not body.endswith(b"0\r\n\r\n"):
            body += conn.recv(65536)


def test_a_reused_connection_closed_unanswered_is_sent_once_more():
    server, retried = Scripted(["answer", "unread"], ["answer"]), []
    with stable_client(server.url, retried.append, timeout=5) as client:
        assert client.post("/predict", json={}).status_code == 200
        assert client.post("/predict", json={"n": 2}).status_code == 200
    assert len(retried) == 1 and retried[0].content == b'{"n":2}'
    assert server.requests == 2  # the closed connection's request was never read


def test_a_retried_request_that_fails_again_fails():
    server, retried = Scripted(["answer", "unread"], ["read"]), []
    with stable_client(server.url, retried.append, timeout=5) as client:
        client.post("/predict", json={})
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/predict", json={})
    assert len(retried) == 1


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (["read"], httpx.RemoteProtocolError),  # a connection opened for the request
        (["answer", "partial"], httpx.RemoteProtocolError),  # part of an answer arrived
        (["answer", "stall"], httpx.ReadTimeout),
    ],
    ids=["fresh-connection", "part-of-an-answer", "timeout"],
)
def test_no_retry_after_a_fresh_connection_an_answer_byte_or_a_timeout(script, error):
    server, retried = Scripted(script, ["answer"]), []
    with stable_client(server.url, retried.append, timeout=1) as client:
        if script[0] == "answer":
            client.post("/predict", json={})
        with pytest.raises(error):
            client.post("/predict", json={})
    assert retried == [] and server.requests == len(script)


def test_a_generator_body_is_not_sent_again_a_replayable_one_is():
    server, retried = Scripted(["answer", "unread"], ["answer", "unread"], ["answer"]), []
    with stable_client(server.url, retried.append, timeout=5) as client:
        client.post("/predict", json={})
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.post("/predict", content=(part for part in itertools.repeat(b"{}", 3)))
        client.post("/predict", json={})
        request = client.build_request("POST", "/predict", content=[b"{", b"}"])
        request.stream = ReplayableBody(lambda: [b"{", b"}"])
        assert client.send(request).status_code == 200
    assert len(retried) == 1 and server.requests == 3
