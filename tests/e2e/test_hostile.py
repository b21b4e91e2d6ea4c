"""Hostile inputs sent through the real API, in the embedded and the distributed mode.

Every refusal must be a clear 4xx with `detail[0].msg` and `detail[0].type`, and the
worker must still answer `GET /ping?rpc=true` afterwards. Hostile files are made in
code; a small streaming server of its own serves the 100 MB downloads.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from tests.support.imageserver import ImageServer
from tests.support.photos import encode, jpeg, photo
from tests.support.stacks import IMAGE_HOST, Stack

VIT = "/models/vit_b32"
PHASH = "/models/phash"
JSON = {"content-type": "application/json"}
HUGE = 100 * 1024 * 1024


# ---------------------------------------------------------------- hostile files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares `width` x `height` RGB pixels (the data does not follow)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * 16)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def square(name: str, side: int = 320) -> Image.Image:
    return photo(name).resize((side, side))


def animated_gif() -> bytes:
    frames = [square("coffee").quantize(64), square("moon").quantize(64)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return out.getvalue()


def gif_frame_png(data: bytes, index: int) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        img.seek(index)
        return encode(img.convert("RGB"), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(square("chelsea").convert("CMYK"), "JPEG", quality=90)


def png16() -> bytes:
    gray = square("camera").convert("L")
    wide = Image.frombytes("I;16", gray.size, bytes(b for v in gray.tobytes() for b in (v, v)))
    data = encode(wide, "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I"), check.mode  # really 16 bits per sample
    return data


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="400" height="400">'
    b'<rect width="400" height="400" fill="red"/></svg>'
)
HTML = b"<!doctype html><html><head><title>x</title></head><body>" + b"<p>hello</p>" * 200 + b"</body></html>"


# ---------------------------------------------------------------- a server that streams 100 MB


class Streamer:
    """Streams `HUGE` bytes (a JPEG header, then zeros) on `host`, with or without Content-Length."""

    def __init__(self, host: str) -> None:
        block = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 - 4)
        zeros = bytes(1024 * 1024)
        self.sent: dict[str, int] = {}

        streamer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                declared = self.path.startswith("/declared")
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                if declared:
                    self.send_header("Content-Length", str(HUGE))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                sent = 0
                try:
                    while sent < HUGE:
                        self.wfile.write(block if sent == 0 else zeros)
                        sent += len(zeros)
                except (ConnectionError, OSError):
                    self.close_connection = True
                streamer.sent[self.path] = sent

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: object, client_address: object) -> None:
                pass

        self._httpd = Server((host, 0), Handler)
        self.base_url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def streamer() -> Iterator[Streamer]:
    server = Streamer(IMAGE_HOST)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hostile(images: ImageServer) -> ImageServer:
    """Registers the hostile files on the shared image server (under /h/)."""
    rocket_png = encode(photo("rocket"), "PNG")
    gif = animated_gif()
    images.add("/h/truncated-half.jpg", jpeg("rocket")[: len(jpeg("rocket")) // 2])
    images.add("/h/truncated.png", rocket_png[: len(rocket_png) // 2], content_type="image/png")
    images.add("/h/huge-ihdr.png", png_declaring(50_000, 50_000), content_type="image/png")
    images.add("/h/over-limit.png", png_declaring(8001, 8000), content_type="image/png")
    images.add("/h/animated.gif", gif, content_type="image/gif")
    images.add("/h/frame0.png", gif_frame_png(gif, 0), content_type="image/png")
    images.add("/h/frame1.png", gif_frame_png(gif, 1), content_type="image/png")
    images.add("/h/cmyk.jpg", cmyk_jpeg())
    images.add("/h/sixteen.png", png16(), content_type="image/png")
    images.add("/h/drawing.svg", SVG, content_type="image/svg+xml")
    images.add("/h/svg-as-jpeg.jpg", SVG, content_type="image/jpeg")
    images.add("/h/page.jpg", HTML, content_type="image/jpeg")
    images.add("/h/empty.jpg", b"", content_type="image/jpeg")
    images.redirect("/h/loop-a", "/h/loop-b")
    images.redirect("/h/loop-b", "/h/loop-a")
    images.redirect("/h/self", "/h/self")
    images.redirect("/h/to-loopback", "http://127.0.0.1:4213/ping")
    images.redirect("/h/to-metadata", "http://169.254.169.254/latest/meta-data/")
    images.redirect("/h/to-ipv6-loopback", "http://[::1]:4213/ping")
    images.redirect("/h/to-localhost", "http://localhost:4213/ping")
    images.redirect("/h/to-file", "file:///etc/passwd")
    images.slow("/h/drip.jpg", jpeg("coins"), delay=1.0, chunk=1)
    # Awkward urls that point to real images (paths as the client sends them, encoded or not).
    for path in ("/h/caf%C3%A9.jpg", '/h/q"uote.jpg', "/h/q%22uote.jpg", "/h/back\\slash.jpg", "/h/back%5Cslash.jpg"):
        images.add(path, jpeg("astronaut"))
    return images


# ---------------------------------------------------------------- helpers


def assert_refused(response: httpx.Response, status: int, kind: str | None = None, contains: str = "") -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert isinstance(detail[0]["msg"], str) and detail[0]["msg"], detail
    assert isinstance(detail[0]["type"], str) and detail[0]["type"], detail
    if kind is not None:
        assert detail[0]["type"] == kind, detail
    assert contains.lower() in detail[0]["msg"].lower(), detail


def assert_alive(stack: Stack, client: httpx.Client) -> None:
    assert client.get("/ping", params={"rpc": "true"}, timeout=60).json() == "pong"
    dead = [p.name for p in stack.processes if not p.alive()]
    assert not dead, f"dead processes: {dead}"


def just_before(key: str) -> str:
    """A cursor that sorts immediately before `key` (no stored url can lie between)."""
    return key[:-1] + chr(ord(key[-1]) - 1) + "\U0010ffff"


# ---------------------------------------------------------------- hostile images


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/h/truncated-half.jpg", 422, "image_truncated"),
        ("/h/truncated.png", 422, "image_truncated"),
        ("/h/huge-ihdr.png", 413, "too_many_pixels"),
        ("/h/over-limit.png", 413, "too_many_pixels"),
        ("/h/drawing.svg", 422, "not_an_image"),
        ("/h/svg-as-jpeg.jpg", 422, "not_an_image"),
        ("/h/page.jpg", 422, "not_an_image"),
        ("/h/empty.jpg", 422, "not_an_image"),
        ("/h/loop-a", 422, "too_many_redirects"),
        ("/h/self", 422, "too_many_redirects"),
        ("/h/to-loopback", 422, "url_forbidden_address"),
        ("/h/to-metadata", 422, "url_forbidden_address"),
        ("/h/to-ipv6-loopback", 422, "url_forbidden_address"),
        ("/h/to-localhost", 422, "url_forbidden_address"),
        ("/h/to-file", 422, None),
    ],
)
def test_hostile_images_are_refused(stack: Stack, hostile: ImageServer, path: str, status: int, kind: str) -> None:
    target = hostile.url(path)
    with stack.client() as client:
        for route, body in ((f"{VIT}/add", {"url": target}), (f"{PHASH}/search", {"url": target})):
            started = time.monotonic()
            response = client.post(route, json=body)
            assert_refused(response, status, kind)
            assert time.monotonic() - started < 15, f"{route} took {time.monotonic() - started:.1f} s"
        assert target not in client.post(f"{VIT}/urls", json={"cursor": just_before(target), "limit": 1}).json()
        assert_alive(stack, client)


def test_animated_gif_is_accepted_and_embedded_from_its_first_frame(stack: Stack, hostile: ImageServer) -> None:
    gif = hostile.url("/h/animated.gif")
    with stack.client() as client:
        assert client.post(f"{PHASH}/add", json={"url": gif}).status_code == 204
        first = client.post(f"{PHASH}/compare", json={"url": gif, "other": hostile.url("/h/frame0.png")}).json()
        second = client.post(f"{PHASH}/compare", json={"url": gif, "other": hostile.url("/h/frame1.png")}).json()
        assert first >= 95 > second + 10, (first, second)
        assert client.post(f"{VIT}/add", json={"url": gif}).status_code == 204
        assert_alive(stack, client)


@pytest.mark.parametrize("path", ["/h/cmyk.jpg", "/h/sixteen.png"])
def test_unusual_modes_are_accepted(stack: Stack, hostile: ImageServer, path: str) -> None:
    target = hostile.url(path)
    with stack.client() as client:
        for model in (VIT, PHASH):
            response = client.post(f"{model}/add", json={"url": target})
            assert response.status_code == 204, response.text
            hits = client.post(f"{model}/search", json={"url": target, "limit": 1}).json()
            assert hits[0]["url"] == target and hits[0]["similarity"] == pytest.approx(100.0, abs=0.01)
        assert_alive(stack, client)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_100_mb_download_answers_413_quickly(stack: Stack, streamer: Streamer, declared: bool) -> None:
    target = f"{streamer.base_url}/{'declared' if declared else 'streamed'}/{stack.mode}.jpg"
    with stack.client() as client:
        started = time.monotonic()
        response = client.post(f"{VIT}/add", json={"url": target})
        elapsed = time.monotonic() - started
        assert_refused(response, 413, "download_too_large")
        assert elapsed < 15, f"took {elapsed:.1f} s"
        assert_alive(stack, client)


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_one_byte_per_second_server_times_out(stack: Stack, hostile: ImageServer) -> None:
    """Slow (about 20 s, IDIOS_DOWNLOAD_TIMEOUT): run in the embedded mode only."""
    with stack.client() as client:
        started = time.monotonic()
        response = client.post(f"{VIT}/add", json={"url": hostile.url("/h/drip.jpg")})
        elapsed = time.monotonic() - started
        assert_refused(response, 422, "download_timeout")
        assert 15 <= elapsed < 29, f"took {elapsed:.1f} s"
        assert_alive(stack, client)


# ---------------------------------------------------------------- hostile urls


@pytest.mark.parametrize(
    ("route", "body", "contains"),
    [
        (f"{VIT}/add", {"url": "file:///etc/passwd"}, "scheme"),
        (f"{VIT}/search", {"url": "file:///etc/passwd"}, "scheme"),
        (f"{VIT}/search_add", {"url": "ftp://127.0.0.2/a.jpg"}, "scheme"),
        (f"{VIT}/compare", {"url": "http://127.0.0.2/a.jpg", "other": "gopher://127.0.0.2/"}, "scheme"),
        (f"{VIT}/add", {"url": "http://user@127.0.0.2/a.jpg"}, "password"),
        (f"{VIT}/search", {"url": "http://user:secret@127.0.0.2/a.jpg"}, "password"),
        (f"{VIT}/search", {"url": "http://127.0.0.2/" + "a" * 3000}, ""),
        (f"{VIT}/compare", {"url": "http://127.0.0.2/a.jpg", "other": "http://127.0.0.2/" + "b" * 3000}, ""),
        (f"{VIT}/add", {"url": "javascript:alert(1)"}, "scheme"),
        (f"{VIT}/add", {"url": "http://"}, ""),
        (f"{VIT}/add", {"url": "   "}, ""),
        (f"{VIT}/add", {"url": 12345}, ""),
    ],
)
def test_bad_urls_are_refused_before_any_download(stack: Stack, route: str, body: dict, contains: str) -> None:
    with stack.client() as client:
        response = client.post(route, json=body)
        assert_refused(response, 422, None, contains)
        assert response.json()["detail"][0]["loc"][0] == "body"
        assert_alive(stack, client)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/a.jpg",
        "http://localhost:4213/ping",
        "http://127.0.0.1:4213/ping",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_private_hosts_are_refused(stack: Stack, url: str) -> None:
    with stack.client() as client:
        for route, body in ((f"{VIT}/add", {"url": url}), (f"{VIT}/compare", {"url": url, "other": url})):
            assert_refused(client.post(route, json=body), 422, "url_forbidden_address")
        assert_alive(stack, client)


def test_awkward_urls_of_real_images_are_stored_exactly(stack: Stack, hostile: ImageServer) -> None:
    base = hostile.url("/astronaut.jpg")
    keys = [
        f'{base}?k=q"uote-{stack.mode}',
        f"{base}?k=back\\slash-{stack.mode}",
        f"{base}?k=unicodé-猫-{stack.mode}",
        f"{base}?k='single'-{stack.mode}",
        hostile.url(f"/h/café.jpg?m={stack.mode}"),
        hostile.url(f'/h/q"uote.jpg?m={stack.mode}'),
        hostile.url(f"/h/back\\slash.jpg?m={stack.mode}"),
    ]
    with stack.client() as client:
        for key in keys:
            response = client.post(f"{VIT}/add", json={"url": key, "metadata": {"key": key}})
            assert response.status_code == 204, (key, response.text)
        for key in keys:
            assert client.post(f"{VIT}/urls", json={"cursor": just_before(key), "limit": 1}).json() == [key]
            hits = client.post(f"{VIT}/search", json={"url": key, "limit": 1, "filter": {"key": key}}).json()
            assert hits == [
                {
                    "url": key,
                    "metadata": {"key": key},
                    "similarity": pytest.approx(100.0, abs=0.01),
                    "flipped": False,
                    "match": None,
                }
            ]
            again = client.post(f"{VIT}/search_add", json={"url": key})
            assert_refused(again, 409, "already_stored")
        assert_alive(stack, client)


# ---------------------------------------------------------------- hostile bodies


def nested(depth: int) -> bytes:
    return b'{"url": "http://127.0.0.2/n.jpg", "metadata": ' + b'{"a":' * depth + b"1" + b"}" * (depth + 1)


@pytest.mark.parametrize("depth", [1000, 5000])
def test_deeply_nested_metadata_is_a_client_error(stack: Stack, depth: int) -> None:
    with stack.client() as client:
        for route in (f"{VIT}/add", f"{VIT}/search_add"):
            response = client.post(route, content=nested(depth), headers=JSON)
            assert 400 <= response.status_code < 500, response.text
            assert_refused(response, response.status_code)
        rows = b'[{"url": "http://127.0.0.2/n.jpg", "embedding": [1], "metadata": ' + b'{"a":' * depth
        rows += b"1" + b"}" * (depth + 1) + b"]"
        response = client.post(f"{VIT}/restore", content=rows, headers=JSON)
        assert 400 <= response.status_code < 500, response.text
        assert_refused(response, response.status_code)
        assert_alive(stack, client)


def test_metadata_size_limit_is_exact(stack: Stack, images: ImageServer) -> None:
    key = images.url(f"/camera.jpg?k=meta-limit-{stack.mode}")
    embedding = [1.0] + [0.0] * 511

    def metadata(size: int) -> dict:
        """Metadata of exactly `size` bytes once serialised as UTF-8 JSON, mostly 3-byte characters."""
        fill = size - len(json.dumps({"x": ""}).encode())
        value = {"x": "猫" * (fill // 3) + "a" * (fill % 3)}
        assert len(json.dumps(value, ensure_ascii=False).encode()) == size
        return value

    with stack.client() as client:
        fits = client.post(f"{VIT}/restore", json=[{"url": key, "metadata": metadata(65535), "embedding": embedding}])
        assert fits.status_code == 204, fits.text
        assert client.post(f"{VIT}/urls", json={"cursor": just_before(key), "limit": 1}).json() == [key]
        over = metadata(65536)
        for route, body in (
            (f"{VIT}/restore", [{"url": key, "metadata": over, "embedding": embedding}]),
            (f"{VIT}/add", {"url": key, "metadata": over}),
            (f"{VIT}/search_add", {"url": key, "metadata": {"deep": {"er": [over]}}}),
            (f"{VIT}/add_bulk", [{"url": key, "metadata": over}] * 2),
        ):
            response = client.post(route, json=body)
            if route.endswith("add_bulk"):
                assert response.status_code == 200, response.text
                assert [item["url"] for item in response.json()["failed"]] == [key, key]
                assert "65535" in response.json()["failed"][0]["error"]
            else:
                assert_refused(response, 422, "value_error", "65535")
        assert_alive(stack, client)


@pytest.mark.parametrize(
    ("route", "body", "kind"),
    [
        (f"{VIT}/urls", {"limit": 10**9}, "less_than_equal"),
        (f"{VIT}/dump", {"limit": 0}, "greater_than_equal"),
        (f"{VIT}/dump", {"limit": 10**9}, "less_than_equal"),
        (f"{VIT}/urls", {"limit": -1}, "greater_than_equal"),
        (f"{VIT}/dump", {"limit": 10**30}, "less_than_equal"),
        (f"{VIT}/search", {"text": "x", "limit": 10**30}, "less_than_equal"),
        (f"{VIT}/search", {"text": "x", "offset": 10**9}, "less_than_equal"),
        (f"{VIT}/search", {"text": "x", "limit": "1e9"}, "int_parsing"),
        (f"{VIT}/search", {"text": "x", "min_similarity": 1e308 * 10}, None),
    ],
)
def test_absurd_limits(stack: Stack, route: str, body: dict, kind: str | None) -> None:
    with stack.client() as client:
        content = json.dumps(body).replace("Infinity", "1e999").encode()
        assert_refused(client.post(route, content=content, headers=JSON), 422, kind)
        assert_alive(stack, client)


def test_search_upload_limits(stack: Stack) -> None:
    files = {"file": ("q.jpg", jpeg("moon"), "image/jpeg")}
    with stack.client() as client:
        for data, kind in (({"limit": "0"}, "greater_than_equal"), ({"limit": str(10**9)}, "less_than_equal")):
            assert_refused(client.post(f"{VIT}/search/upload", files=files, data=data), 422, kind)
        assert_refused(client.post(f"{VIT}/search/upload", files=files, data={"filter": "[1"}), 422, "bad_filter")
        assert_refused(client.post(f"{VIT}/search/upload", files=files, data={"filter": "[1]"}), 422, "bad_filter")
        svg = {"file": ("q.svg", SVG, "image/svg+xml")}
        assert_refused(client.post(f"{VIT}/search/upload", files=svg), 422, "not_an_image")
        bomb = {"file": ("q.png", png_declaring(50_000, 50_000), "image/png")}
        assert_refused(client.post(f"{VIT}/search/upload", files=bomb), 413, "too_many_pixels")
        assert_alive(stack, client)


def test_cursor_with_quotes_pages_correctly(stack: Stack, images: ImageServer) -> None:
    base = images.url(f"/coins.jpg?cur-{stack.mode}=")
    keys = sorted(base + suffix for suffix in ['a"', 'a" or url != "', "a\\", "a\\\"'", "b'", 'b"]', "c"])
    rows = [{"url": key, "metadata": {}, "embedding": [0.0, 1.0] + [0.0] * 510} for key in keys]
    with stack.client() as client:
        assert client.post(f"{VIT}/restore", json=rows).status_code == 204
        for index, cursor in enumerate(keys[:-1]):
            page = client.post(f"{VIT}/urls", json={"cursor": cursor, "limit": 2})
            assert page.status_code == 200, page.text
            expected = keys[index + 1 : index + 3]
            assert page.json()[: len(expected)] == expected
            assert all(not url.startswith(base) for url in page.json()[len(expected) :])
            dumped = client.post(f"{VIT}/dump", json={"cursor": cursor, "limit": 1}).json()
            assert [row["url"] for row in dumped] == [keys[index + 1]]
        seen: list[str] = []
        cursor = just_before(keys[0])
        while len(seen) < len(keys):
            page = client.post(f"{VIT}/urls", json={"cursor": cursor, "limit": 3}).json()
            seen += page
            cursor = page[-1]
        assert seen[: len(keys)] == keys
        assert_alive(stack, client)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/models/nope/count", None),
        ("POST", "/models/nope/search", {"text": "x"}),
        ("POST", "/models/nope/urls", None),
        ("POST", "/models/nope/restore", [{"url": "http://127.0.0.2/a.jpg", "embedding": [1.0]}]),
        ("POST", "/models/nope/add_bulk", [{"url": "http://127.0.0.2/a.jpg"}]),
        ("POST", '/models/vit_b32"/compare', {"url": "http://127.0.0.2/a.jpg", "other": "http://127.0.0.2/b.jpg"}),
        ("POST", "/models/VIT_B32/remove", {"url": "http://127.0.0.2/a.jpg"}),
    ],
)
def test_unknown_models(stack: Stack, method: str, path: str, body: object) -> None:
    with stack.client() as client:
        response = client.request(method, path, json=body)
        assert_refused(response, 404, "unknown_model")
        assert_alive(stack, client)


@pytest.mark.parametrize(
    ("route", "content", "kind"),
    [
        (f"{VIT}/search", b"", None),
        (f"{VIT}/add_bulk", b"", None),
        (f"{VIT}/restore", b"", None),
        (f"{VIT}/compare", b"", None),
        (f"{VIT}/add", b"{not json", "json_invalid"),
        (f"{VIT}/search", b'{"text": "x",}', "json_invalid"),
        (f"{VIT}/add_bulk", b"\xff\xfe\x00garbage", None),
        (f"{VIT}/add", b'{"url": "http://127.0.0.2/\xff.jpg"}', None),
        (f"{VIT}/urls", b"(\xff", None),
        (f"{VIT}/urls", b"nul\x00l", None),
        (f"{VIT}/add", b"[]", None),
        (f"{VIT}/add", b'[{"url": "http://127.0.0.2/a.jpg"}]', None),
        (f"{VIT}/search", b'[{"text": "x"}]', None),
        (f"{VIT}/urls", b"[]", None),
        (f"{VIT}/dump", b'"cursor"', None),
        (f"{VIT}/remove", b"null", None),
        (f"{VIT}/add_bulk", b'{"url": "http://127.0.0.2/a.jpg"}', None),
        (f"{VIT}/restore", b'{"url": "http://127.0.0.2/a.jpg", "embedding": []}', None),
        (f"{VIT}/search", b'{"text": "x", "filter": {"k": [1]}}', None),
        (f"{VIT}/search", b'{"text": "x", "filter": {"k": NaN}}', None),
        (f"{VIT}/add", b'{"url": "http://127.0.0.2/a.jpg", "extra": 1}', "extra_forbidden"),
    ],
)
def test_malformed_bodies(stack: Stack, route: str, content: bytes, kind: str | None) -> None:
    with stack.client() as client:
        assert_refused(client.post(route, content=content, headers=JSON), 422, kind)
        assert_alive(stack, client)


def test_50_mb_json_bodies_answer_413(stack: Stack) -> None:
    big = json.dumps({"url": "http://127.0.0.2/a.jpg", "metadata": {"x": "y" * (50 * 1024 * 1024)}}).encode()

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(big), 1024 * 1024):
            yield big[start : start + 1024 * 1024]

    with stack.client() as client:
        for route in (f"{VIT}/add", f"{VIT}/add_bulk", f"{VIT}/search"):
            started = time.monotonic()
            assert_refused(client.post(route, content=big, headers=JSON), 413, "body_too_large")
            assert time.monotonic() - started < 30
        # Without Content-Length: the limit counts what arrives.
        assert_refused(client.post(f"{VIT}/add", content=chunked(), headers=JSON), 413, "body_too_large")
        assert_alive(stack, client)


def test_add_bulk_limits_and_non_object_items(stack: Stack, images: ImageServer) -> None:
    good = images.url(f"/moon.jpg?k=bulk-hostile-{stack.mode}")
    with stack.client() as client:
        too_many = [{"url": images.url(f"/moon.jpg?k=many{i}")} for i in range(1001)]
        assert_refused(client.post(f"{VIT}/add_bulk", json=too_many), 413, "too_many_items")
        assert_refused(client.post(f"{VIT}/add_bulk", json=[1] * 1001), 413, "too_many_items")
        weird = [
            1,
            "http://127.0.0.2/a.jpg",
            None,
            [{"url": good}],
            {"url": 7},
            {"link": good},
            2.5,
            True,
            {"url": good},
        ]
        response = client.post(f"{VIT}/add_bulk", json=weird)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["added"] == [good] and result["found"] == []
        assert len(result["failed"]) == len(weird) - 1
        assert all(item["url"] and item["error"] for item in result["failed"]), result
        assert "http://127.0.0.2/a.jpg" in [item["url"] for item in result["failed"]]
        assert client.post(f"{VIT}/add_bulk", json=[]).json() == {"added": [], "found": [], "failed": []}
        assert_alive(stack, client)
