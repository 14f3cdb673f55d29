"""The keep-alive policy of a client of the stable endpoint. Each roll-out step reloads nginx, and
its old worker closes at once the client connections it holds idle between two requests, without
reading from them (`ngx_close_idle_connections`). A client that reuses such a connection at that
moment gets no answer — "Server disconnected without sending a response", or a reset — and no
back-end saw its request. Such a request is sent once more, on another connection (what browsers
do); never one that timed out, got any byte of an answer, or failed on a connection opened for it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx


class _AnswerBytes(threading.local):
    """Bytes this thread read since it last wrote (a sync HTTP/1.1 request is written, then read)."""

    count = 0


class _CountingStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, seen: _AnswerBytes):
        self.stream, self.seen = stream, seen

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self.stream.read(max_bytes, timeout)
        self.seen.count += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.seen.count = 0
        self.stream.write(buffer, timeout)

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _CountingStream(self.stream.start_tls(*args, **kwargs), self.seen)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _CountingBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend, seen: _AnswerBytes):
        self.backend, self.seen = backend, seen

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _CountingStream(self.backend.connect_tcp(*args, **kwargs), self.seen)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _CountingStream(self.backend.connect_unix_socket(*args, **kwargs), self.seen)

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class ReplayableBody(httpx.SyncByteStream):
    """A body sent in chunks that `chunks()` makes anew each time, so the policy may send it again
    (set as the request's `stream`; a generator given as `content` is sent once only)."""

    def __init__(self, chunks: Callable[[], Iterable[bytes]]):
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks()


class RetryClosedKeepAlive(httpx.BaseTransport):
    """httpx's transport, sending a request once more when it went out on a reused connection that
    was closed (`ReadError`, `RemoteProtocolError`) before any byte of an answer, if its body can be
    sent again (bytes, or a `ReplayableBody`); `on_retry` is told of each such request."""

    def __init__(self, on_retry: Callable[[httpx.Request], None] | None = None, **transport: Any):
        self.inner = httpx.HTTPTransport(**transport)
        self.seen = _AnswerBytes()
        # httpx takes no network backend: its pool's is wrapped to count the answer's bytes
        pool = self.inner._pool
        pool._network_backend = _CountingBackend(pool._network_backend, self.seen)
        self.on_retry = on_retry

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        extensions, caller_trace = request.extensions, request.extensions.get("trace")
        opened: list[str] = []  # the connection steps this request took (none: a reused connection)

        def trace(name: str, info: dict[str, Any]) -> None:
            if name.startswith("connection.connect_"):
                opened.append(name)
            if caller_trace is not None:
                caller_trace(name, info)

        request.extensions = {**extensions, "trace": trace}
        self.seen.count = 0
        try:
            return self.inner.handle_request(request)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            replayable = isinstance(request.stream, httpx.ByteStream | ReplayableBody)
            if opened or self.seen.count or not replayable:
                raise
        finally:
            request.extensions = extensions
        if self.on_retry is not None:
            self.on_retry(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def stable_client(
    base_url: str, on_retry: Callable[[httpx.Request], None] | None = None, **kwargs: Any
) -> httpx.Client:
    """An `httpx.Client` of the stable endpoint with the keep-alive policy above (kwargs: httpx's)."""
    return httpx.Client(base_url=base_url, transport=RetryClosedKeepAlive(on_retry), **kwargs)
