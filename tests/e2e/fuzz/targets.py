"""Fuzz targets: each takes arbitrary bytes, feeds them to one part of Idios that reads client input,
and checks what a client would rely on. Only `IdiosError` subclasses (and, for request bodies, the
pydantic errors the API answers with 422) may escape; anything else, or a broken invariant (an
AssertionError), is a defect.

Used by tests/e2e/fuzz/fuzz.py (atheris, coverage-guided) and tests/e2e/test_fuzz.py (corpus replay).
"""

from __future__ import annotations

import ipaddress
import math
import re
import resource
import struct
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from fastapi.exceptions import RequestValidationError

from idios import expr, netguard
from idios.config import Settings
from idios.decoding import decode_image
from idios.errors import IdiosError
from idios.limits import URL_MAX_CHARS
from idios.models.base import ModelSpec

Target = Callable[[bytes], None]


def text(data: bytes) -> str:
    """Bytes as text, invalid UTF-8 kept as lone surrogates (what a str may hold but UTF-8 may not)."""
    return data.decode("utf-8", errors="surrogateescape")


# --- decode_image ---------------------------------------------------------------------------------------

# Small limits keep each input cheap and let tiny images through to the decoders.
DECODE_SETTINGS = Settings(min_image_side=1, max_image_pixels=4_000_000, max_image_side=64, decode_min_side=32)


# At 4 Mpx the costliest decode (a WebP with alpha, 16 bytes a pixel) needs about 64 MiB: an input that
# raises the process's peak memory by more than this costs more than its declared size allows.
DECODE_MEMORY_MIB = 256


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode(data: bytes) -> None:
    before = _peak_mib()
    try:
        image = decode_image(data, DECODE_SETTINGS)
    except IdiosError:
        image = None
    grown = _peak_mib() - before
    assert grown < DECODE_MEMORY_MIB, f"one decode raised the peak memory by {grown:.0f} MiB"
    if image is None:
        return
    assert image.mode == "RGB", image.mode
    assert 0 < max(image.size) <= DECODE_SETTINGS.max_image_side, image.size
    image.tobytes()  # the pixels are really there


# --- validate_url ---------------------------------------------------------------------------------------


def url(data: bytes) -> None:
    value = text(data)
    try:
        accepted = netguard.validate_url(value)
    except IdiosError:
        accepted = None
    stripped = value.strip()
    plain = netguard._PLAIN_URL.fullmatch(stripped)
    if len(stripped) <= URL_MAX_CHARS and netguard._is_plain(stripped):
        # The fast path accepts only what httpx's parse accepts, with the same host and port.
        assert accepted == stripped, (value, accepted)
        parsed = httpx.URL(stripped)
        assert parsed.scheme in netguard.ALLOWED_SCHEMES and not parsed.userinfo, stripped
        assert parsed.raw_host.decode("ascii") == plain["host"], (stripped, parsed.raw_host)
        default = 443 if parsed.scheme == "https" else 80
        assert (parsed.port or default) == int(plain["port"] or default), (stripped, parsed.port)
    if accepted is None:
        return
    assert accepted == stripped
    assert len(accepted) <= URL_MAX_CHARS
    parsed = httpx.URL(accepted)  # what the fetcher does next
    assert parsed.scheme in netguard.ALLOWED_SCHEMES, accepted
    assert parsed.host, accepted
    assert not parsed.userinfo, accepted


# --- AddressGuard ---------------------------------------------------------------------------------------

GUARD = netguard.AddressGuard()
ALLOWING = netguard.AddressGuard(["10.1.0.0/16", "fd00:1::/32"])
V4_NOT_PUBLIC = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12")
V4_NOT_PUBLIC += ("192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
NOT_PUBLIC = [ipaddress.ip_network(net) for net in (*V4_NOT_PUBLIC, "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")]


def _refused(guard: netguard.AddressGuard, value: str) -> bool:
    try:
        guard.check_address(value)
    except IdiosError:
        return True
    return False


def address(data: bytes) -> None:
    value = text(data)
    refused = _refused(GUARD, value)
    _refused(ALLOWING, value)
    addr = netguard._parse_ip(value)
    if addr is None:
        assert refused, f"{value!r} is no address but was accepted"
        return
    forbidden = GUARD.is_forbidden(addr)
    assert refused == forbidden, (value, refused, forbidden)
    assert GUARD.is_forbidden(ipaddress.ip_address(str(addr))) == forbidden, value  # the same in its usual form
    if any(addr.version == net.version and addr in net for net in NOT_PUBLIC):
        assert forbidden, f"{addr} is not public but was allowed"
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = netguard._embedded_ipv4(addr)
        if embedded is not None and GUARD.is_forbidden(embedded):
            assert forbidden, f"{addr} embeds the forbidden {embedded} but was allowed"
    else:
        # The same address written as IPv4-mapped IPv6 is judged the same.
        mapped = ipaddress.IPv6Address(int(addr) | 0xFFFF00000000)
        assert GUARD.is_forbidden(mapped) == forbidden, (addr, mapped)
    if not forbidden:
        assert ALLOWING.is_forbidden(addr) is False, addr


# --- expr -----------------------------------------------------------------------------------------------

# A Milvus double-quoted string literal: the characters its grammar allows unescaped, and the escapes
# both its grammar and Go's strconv.Unquote (which reads the literal) accept.
_LITERAL = re.compile(
    r'"((?:[^"\\\r\n]|\\[abfnrtv\\"]|\\[0-7]{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8})*)"'
)
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}
_FLOAT = re.compile(r"-?(?:[0-9]*\.[0-9]+|[0-9]+\.)(?:[eE][+-]?[0-9]+)?|-?[0-9]+[eE][+-]?[0-9]+")
_INT = re.compile(r"-?[0-9]+")


def unquote(body: str) -> str:
    """The text of a literal's body, as Go's strconv.Unquote reads it (valid escapes only, see _LITERAL)."""
    raw = bytearray()  # \x and octal escapes are bytes, joined into UTF-8 with their neighbours
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            raw += char.encode("utf-8")
            i += 1
            continue
        kind = body[i + 1]
        if kind in _ESCAPES:
            raw += _ESCAPES[kind].encode()
            i += 2
        elif kind == "x":
            raw.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif kind in "uU":
            width = 4 if kind == "u" else 8
            code = int(body[i + 2 : i + 2 + width], 16)
            assert code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF, f"Go refuses the escape {body[i : i + 2 + width]}"
            raw += chr(code).encode("utf-8")
            i += 2 + width
        else:
            raw.append(int(body[i + 1 : i + 4], 8))
            i += 4
    return raw.decode("utf-8")  # Go refuses a literal that is not valid UTF-8


def read_literal(expression: str, at: int) -> tuple[str, int]:
    """The string literal at `at` and the position after it; AssertionError if there is none."""
    match = _LITERAL.match(expression, at)
    assert match, f"no string literal at {at} in {expression!r}"
    return unquote(match[1]), match.end()


def check_string_literal(value: str) -> None:
    try:
        literal = expr.string_literal(value)
    except IdiosError:
        # Refused only when the text cannot be sent at all (lone surrogates).
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return
        raise AssertionError(f"{value!r} is valid text but was refused") from None
    decoded, end = read_literal(literal, 0)
    assert end == len(literal), f"{value!r} escapes its literal: {literal!r}"
    assert decoded == value, (value, literal, decoded)


def read_scalar(expression: str, at: int, value: Any) -> int:
    """Check that the scalar literal at `at` is `value`; return the position after it."""
    if isinstance(value, bool):
        word = "true" if value else "false"
        assert expression.startswith(word, at), (expression, at, value)
        return at + len(word)
    if isinstance(value, int):
        match = _INT.match(expression, at)
        assert match and int(match[0]) == value, (expression, at, value)
        assert abs(value) <= 2**63 - 1, f"{value} is beyond Milvus's int64 literals"
        return match.end()
    if isinstance(value, float):
        match = _FLOAT.match(expression, at)
        assert match and float(match[0]) == value, (expression, at, value)
        return match.end()
    decoded, end = read_literal(expression, at)
    assert decoded == value, (expression, at, value)
    return end


def filter_of(data: bytes) -> dict[str, Any]:
    """Key/value pairs from NUL-separated fields; a value's first byte picks its type."""
    fields = data.split(b"\0")
    result: dict[str, Any] = {}
    for key, raw in zip(fields[0::2], fields[1::2], strict=False):
        kind, body = raw[:1], raw[1:]
        value: Any
        if kind == b"i":
            value = int.from_bytes(body[:16], "big", signed=True) if body else 0
        elif kind == b"d" and len(body) >= 8:
            value = struct.unpack("<d", body[:8])[0]
        elif kind == b"b":
            value = bool(body)
        elif kind == b"n":
            value = int(body) if body.isdigit() else -1
        else:
            value = text(raw)
        result[text(key)] = value
    return result


def expression(data: bytes) -> None:
    check_string_literal(text(data))
    equalities = filter_of(data)
    try:
        built = expr.metadata_filter(equalities)
    except IdiosError:
        return
    if not equalities:
        assert built == ""
        return
    at = 0
    for index, (key, value) in enumerate(equalities.items()):
        if index:
            assert built.startswith(" and ", at), (built, at)
            at += len(" and ")
        assert built.startswith("metadata[", at), (built, at)
        start = at + len("metadata[")
        decoded, at = read_literal(built, start)
        assert decoded == key, (key, decoded)
        # Milvus versions read escapes in a JSON key differently, and `][` ends the key early.
        assert "\\" not in built[start:at] and "][" not in built[start:at], f"key {key!r} cannot be matched"
        assert built.startswith("] == ", at), (built, at)
        at = read_scalar(built, at + len("] == "), value)
    assert at == len(built), f"text after the last clause: {built[at:]!r}"
    if isinstance(value, float):
        assert math.isfinite(value)


# --- restore --------------------------------------------------------------------------------------------

FLOAT_SPEC = ModelSpec("fuzz_float", 4, "COSINE", "float", False, "a 4-d float model", copy_similarity=95.0)
BINARY_SPEC = ModelSpec("fuzz_bits", 16, "HAMMING", "binary", False, "a 16-bit binary model", copy_similarity=90.0)
MAX_ROWS = 64


def restore(data: bytes) -> None:
    from idios.api.routes import _restore_args  # imports FastAPI: only for this target

    for spec in (FLOAT_SPEC, BINARY_SPEC):
        try:
            args = _restore_args(spec, data, MAX_ROWS)
        except (IdiosError, RequestValidationError):
            continue
        urls, metadata, vectors = args.urls, args.metadata, args.vectors
        assert len(urls) == len(metadata) == len(vectors) <= MAX_ROWS
        for row_url in urls:
            assert netguard.validate_url(row_url) == row_url
        assert all(isinstance(item, dict) for item in metadata)
        vectors = np.asarray(vectors)
        if spec.vector_kind == "float":
            assert vectors.dtype == np.float32 and vectors.shape == (len(urls), spec.dim)
            assert np.isfinite(vectors).all()
            if len(urls):
                assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5), vectors
        else:
            assert vectors.shape == (len(urls), spec.dim // 8), vectors.shape


TARGETS: dict[str, Target] = {
    "decode": decode,
    "url": url,
    "address": address,
    "expr": expression,
    "restore": restore,
}


def fuzzed(name: str) -> Target:
    """The target called `name`; `all`: every target, the first byte picking one."""

    def every(data: bytes) -> None:
        if data:
            TARGETS[list(TARGETS)[data[0] % len(TARGETS)]](data[1:])

    return every if name == "all" else TARGETS[name]
