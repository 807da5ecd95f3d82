"""A local threaded HTTP server on 127.0.0.1 for tests: plain routes plus misbehaving ones.

    server.add("/feed.xml", body, content_type=..., etag=..., status=..., headers=...)
    server.url("/feed.xml")          → "http://127.0.0.1:PORT/feed.xml"
    server.requests                  → every request seen: (path, headers dict)

Built-in faults (paths): /hang (headers, then silence), /hang-headers (silence before headers),
/slow (1 byte a second, forever), /gzip-bomb (~250 KiB of gzip inflating to 256 MiB),
/big (20 MB identity body), /loop (redirects to itself), /redirect?to=URL (302 to URL),
/sleep?s=SECONDS (answers after a pause; `max_in_flight` counts concurrent requests).

Use the `fault_server` fixture (import it into a test module or conftest), or `FaultServer()` as a
context manager. Routes with `etag`/`last_modified` answer conditional GETs with 304 like a real
server, so re-poll tests see what production sees.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

BOMB_DECODED = 256 * 1024 * 1024  # 256 MiB of zeros once inflated: 17x the default cap


def _gzip_bomb(decoded: int = BOMB_DECODED) -> bytes:
    """→ gzip bytes inflating to `decoded` zero bytes, built in well under a second.

    After a full flush deflate forgets its history, so every further 1 MiB block of zeros
    compresses to the same bytes: compress two, repeat the second, add gzip's header/trailer.
    """
    block = b"\0" * (1024 * 1024)
    co = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    again = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    n = decoded // len(block)
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (n * len(block)) & 0xFFFFFFFF)
    return header + first + again * (n - 1) + co.flush() + trailer


_BOMB: bytes | None = None
_BOMB_LOCK = threading.Lock()


def gzip_bomb() -> bytes:
    """→ a gzip stream (~250 KiB) that inflates to 256 MiB; built once per process."""
    global _BOMB
    with _BOMB_LOCK:
        if _BOMB is None:
            _BOMB = _gzip_bomb()
        return _BOMB


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up (the point of most faults) are not errors worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultServer:
    """Threaded HTTP server on 127.0.0.1:<free port> with configurable routes and faults."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.in_flight = self.max_in_flight = 0  # for /sleep: concurrent requests seen
        self.stop = threading.Event()  # ends hanging/slow handlers at shutdown
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FaultServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release hanging handlers."""
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Path → absolute URL on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes | str = b"", **kw: object) -> str:
        """Register (or replace) a route; returns its URL."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        with self._lock:
            self.routes[path] = Route(body=data, **kw)  # type: ignore[arg-type]
        return self.url(path)

    def hits(self, path: str) -> int:
        """Path → how many requests reached it."""
        return sum(1 for p, _ in self.requests if urlsplit(p).path == path)

    # -- serving ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append((h.path, headers))
        parts = urlsplit(h.path)
        path = parts.path
        try:
            fault = getattr(self, "_fault_" + path.strip("/").replace("-", "_"), None)
            if path in self.routes:
                self._serve_route(h, self.routes[path], headers)
            elif fault is not None:
                fault(h, parse_qs(parts.query))
            else:
                self._send(h, 404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, which is what most faults are for

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        h.send_response(status)
        if ctype:
            h.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body:
            h.wfile.write(body)

    def _serve_route(self, h: BaseHTTPRequestHandler, r: Route, req: dict[str, str]) -> None:
        r.hits += 1
        extra = dict(r.headers)
        if r.etag:
            extra["ETag"] = r.etag
        if r.last_modified:
            extra["Last-Modified"] = r.last_modified
        if r.status == 200 and (r.etag or r.last_modified):
            inm, ims = req.get("if-none-match"), req.get("if-modified-since")
            by_date = not r.etag and r.last_modified and ims == r.last_modified
            if (r.etag and inm == r.etag) or by_date:
                self._send(h, 304, b"", "", extra)
                return
        self._send(h, r.status, r.body, r.content_type, extra)

    def _fault_hang(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.flush()
        self.stop.wait(120)

    def _fault_hang_headers(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.stop.wait(120)

    def _fault_slow(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(100000):
            h.wfile.write(b"<")
            h.wfile.flush()
            if self.stop.wait(1.0):
                return

    def _fault_gzip_bomb(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self._send(h, 200, gzip_bomb(), "application/rss+xml", {"Content-Encoding": "gzip"})

    def _fault_big(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        size = 20 * 1000 * 1000
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", str(size))
        h.end_headers()
        block = b"x" * 65536
        sent = 0
        while sent < size and not self.stop.is_set():
            n = min(len(block), size - sent)
            h.wfile.write(block[:n])
            sent += n

    def _fault_sleep(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.stop.wait(float(q.get("s", ["0.3"])[0]))
        finally:
            with self._lock:
                self.in_flight -= 1
        self._send(h, 200, b"ok", "text/plain")

    def _fault_loop(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self._send(h, 302, b"", "text/plain", {"Location": "/loop"})

    def _fault_redirect(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self._send(h, 302, b"", "text/plain", {"Location": q.get("to", ["/"])[0]})


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A started FaultServer, closed after the test."""
    with FaultServer() as s:
        yield s


def wait_until(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll `pred()` until true or `timeout` seconds pass; → its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())
