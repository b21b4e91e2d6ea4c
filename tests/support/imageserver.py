"""A small threaded HTTP server for tests that fetch image urls.

Usage::

    with ImageServer(host="127.0.0.2") as server:
        server.add("/cat.jpg", jpeg_bytes)                      # 200 with Content-Type image/jpeg
        server.add("/page", b"<html></html>", content_type="text/html")
        server.add("/gone", b"", status=404)
        server.redirect("/old", "/cat.jpg")                     # 302, relative or absolute location
        server.redirect("/loop", "/loop")                       # a redirect loop
        server.slow("/drip.jpg", jpeg_bytes)                    # one byte per second
        # hostile servers
        server.bomb("/bomb.jpg", "br")                          # 1 GiB of zeros, brotli-compressed
        server.lying_length("/short", body, declared=10)        # Content-Length shorter than the body
        server.lying_length("/long", body, declared=10**6)      # longer: the body ends, the connection stays
        server.truncated("/cut", body, declared=10**6)          # longer, and the connection closes
        server.endless("/drip", b"x", delay=0.5)                # chunked, a chunk every 0.5 s, never ending
        server.endless("/flood", b"x" * 65536)                  # chunked, as fast as it goes, never ending
        url = server.url("/cat.jpg")                            # http://127.0.0.2:<port>/cat.jpg
        ...
        server.requests                                         # paths requested so far, in order
        server.request_headers                                  # their headers, in the same order

A header given as "" is left out; without Content-Length the body ends when
the connection closes.

Any 127.0.0.x host works on Linux. Unknown paths answer 404. Routes match the
full path with its query string first, then the path alone.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up early are expected in tests; other errors are reported."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds between chunks of `chunk` bytes; 0 sends the body at once
    chunk: int = 1
    endless: bytes = b""  # sent as one HTTP chunk after another, `delay` apart, until the client leaves
    close: bool = False  # close the connection after the body, whatever Content-Length said


BOMB_SEGMENT = 16 << 20


@functools.cache
def compression_bomb(encodings: str, size: int = 1 << 30) -> bytes:
    """`size` zero bytes (a multiple of 16 MiB) compressed with `encodings`, a Content-Encoding value
    listing them in the order applied ("gzip", "br", "gzip, br", ...). 1 GiB takes about a second.

    gzip and deflate repeat one fully flushed (byte-aligned, history reset) deflate segment instead
    of compressing every byte, which would take zlib several seconds per GiB.
    """
    assert size % BOMB_SEGMENT == 0
    zeros = bytes(BOMB_SEGMENT)
    count = size // BOMB_SEGMENT
    first, _, others = encodings.partition(",")
    data = _zeros_bomb(first.strip(), zeros, count)
    return encode(others, data) if others.strip() else data


def encode(encodings: str, data: bytes) -> bytes:
    """`data` compressed with each of `encodings` (a Content-Encoding value) in turn."""
    for encoding in (name.strip().lower() for name in encodings.split(",")):
        if encoding not in ("", "identity"):
            data = _compress(encoding, data)
    return data


def _zeros_bomb(encoding: str, zeros: bytes, count: int) -> bytes:
    if encoding in ("gzip", "x-gzip", "deflate"):
        deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        segment = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        raw = segment * count + deflate.flush()
        if encoding == "deflate":
            adler = 1
            for _ in range(count):
                adler = zlib.adler32(zeros, adler)
            return b"\x78\xda" + raw + adler.to_bytes(4, "big")
        crc = 0
        for _ in range(count):
            crc = zlib.crc32(zeros, crc)
        size = len(zeros) * count
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        return header + raw + crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    if encoding == "br":
        import brotli

        compressor = brotli.Compressor(quality=1)
        return b"".join(compressor.process(zeros) for _ in range(count)) + compressor.finish()
    if encoding == "zstd":
        compressor = zstd_module().ZstdCompressor(level=3)
        return b"".join(compressor.compress(zeros) for _ in range(count)) + compressor.flush()
    raise ValueError(f"unknown encoding {encoding!r}")


def zstd_module() -> Any:
    """compression.zstd (Python 3.14) or its backport."""
    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        return importlib.import_module("backports.zstd")


def _compress(encoding: str, data: bytes) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        import gzip

        return gzip.compress(data, compresslevel=6, mtime=0)
    if encoding == "deflate":
        return zlib.compress(data, 6)
    if encoding == "br":
        import brotli

        return brotli.compress(data, quality=5)
    if encoding == "zstd":
        return zstd_module().compress(data)
    raise ValueError(f"unknown encoding {encoding!r}")


class ImageServer:
    """Serves registered routes on `host` (any free port unless `port` is given)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), self._handler_class())
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    # -- routes

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "image/jpeg",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Serve `body` at `path`; `headers` are sent as well (and may override Content-Length). Returns the url."""
        self.routes[path] = Route(body=body, status=status, content_type=content_type, headers=dict(headers or {}))
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer `path` with a redirect to `location` (relative or absolute). Returns the url."""
        self.routes[path] = Route(status=status, content_type="text/plain", headers={"Location": location})
        return self.url(path)

    def slow(
        self,
        path: str,
        body: bytes,
        content_type: str = "image/jpeg",
        *,
        delay: float = 1.0,
        chunk: int = 1,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Serve `body` at `path`, `chunk` bytes every `delay` seconds (Content-Length is the full size)."""
        self.routes[path] = Route(
            body=body, content_type=content_type, delay=delay, chunk=max(1, chunk), headers=dict(headers or {})
        )
        return self.url(path)

    # -- hostile servers

    def bomb(self, path: str, encoding: str, size: int = 1 << 30, content_type: str = "image/jpeg") -> str:
        """Serve `size` zero bytes compressed with `encoding` (see `compression_bomb`), with an honest
        Content-Length for the compressed body. Returns the url."""
        return self.add(path, compression_bomb(encoding, size), content_type, headers={"Content-Encoding": encoding})

    def lying_length(self, path: str, body: bytes, declared: int, content_type: str = "image/jpeg") -> str:
        """Serve `body` with `Content-Length: declared`. A shorter one leaves the rest of the body on the
        connection; a longer one leaves the connection open after the body, as a stalled server would."""
        self.routes[path] = Route(body=body, content_type=content_type, headers={"Content-Length": str(declared)})
        return self.url(path)

    def truncated(self, path: str, body: bytes, declared: int, content_type: str = "image/jpeg") -> str:
        """Serve `body`, claiming `Content-Length: declared` (more), then close the connection."""
        self.routes[path] = Route(
            body=body, content_type=content_type, headers={"Content-Length": str(declared)}, close=True
        )
        return self.url(path)

    def endless(
        self,
        path: str,
        piece: bytes,
        *,
        delay: float = 0.0,
        content_type: str = "image/jpeg",
        headers: dict[str, str] | None = None,
    ) -> str:
        """A chunked body that never ends: `piece` again and again, `delay` seconds apart (0: as fast as
        the client reads), until the client hangs up. Returns the url."""
        merged = {"Content-Length": "", "Transfer-Encoding": "chunked", **(headers or {})}
        self.routes[path] = Route(content_type=content_type, headers=merged, endless=piece, delay=delay)
        return self.url(path)

    # -- addresses

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- lifecycle

    def start(self) -> ImageServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"imageserver-{self.host}"
            )
            self._thread.daemon = True
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- request handling

    def _find(self, raw_path: str) -> Route | None:
        return self.routes.get(raw_path) or self.routes.get(raw_path.split("?", 1)[0])

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve(send_body=True)

            def do_HEAD(self) -> None:
                self._serve(send_body=False)

            def _serve(self, *, send_body: bool) -> None:
                with server._lock:
                    server.requests.append(self.path)
                    server.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                route = server._find(self.path)
                if route is None:
                    route = Route(body=b"not found", status=404, content_type="text/plain")
                headers = {"Content-Type": route.content_type, "Content-Length": str(len(route.body))}
                headers.update(route.headers)
                headers = {name: value for name, value in headers.items() if value != ""}
                chunked = any(name.lower() == "transfer-encoding" for name in headers)
                if route.close or not (chunked or any(name.lower() == "content-length" for name in headers)):
                    headers["Connection"] = "close"
                    self.close_connection = True
                try:
                    self.send_response(route.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if not send_body:
                        return
                    if route.endless:
                        self._send_endless(route)
                        return
                    if route.delay <= 0:
                        self.wfile.write(route.body)
                        return
                    for start in range(0, len(route.body), route.chunk):
                        self.wfile.write(route.body[start : start + route.chunk])
                        self.wfile.flush()
                        if server._stopping.wait(route.delay):
                            self.close_connection = True
                            break
                except ConnectionError:
                    self.close_connection = True

            def _send_endless(self, route: Route) -> None:
                chunk = f"{len(route.endless):x}\r\n".encode() + route.endless + b"\r\n"
                self.close_connection = True
                while not server._stopping.is_set():
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if route.delay > 0 and server._stopping.wait(route.delay):
                        break

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
