"""Milvus boolean expressions built from user text without letting it escape its string literal.

Milvus parses a double-quoted literal like Go's `strconv.Unquote`, which accepts the escapes
JSON produces (`\\"`, `\\\\`, `\\n`, `\\uXXXX`), so a JSON string encoding is a safe literal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from idios.errors import Invalid

Scalar = str | int | float | bool

# Milvus parses integer literals as int64, and the most negative one only as a positive number
# negated, which overflows: a filter integer lies in this range.
INT_LIMIT = 2**63 - 1
# Milvus reads a JSON key between brackets with its own rules: versions differ in whether they
# unescape it (2.3 does; others match nothing for a key with an escape, or fail), and `][` ends
# the key early (a parse error). Keys holding what JSON escapes, or `][`, are refused.
KEY_FORBIDDEN = ('"', "\\", "][")


def string_literal(value: str) -> str:
    """`value` as a double-quoted Milvus string literal."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("text holds characters that are not valid Unicode", type="bad_text") from None
    return json.dumps(value, ensure_ascii=False)


def scalar_literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > INT_LIMIT:
            raise Invalid(f"filter integers must lie between -{INT_LIMIT} and {INT_LIMIT}", type="bad_filter")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid("filter values must be finite numbers", type="bad_filter")
        return repr(value)
    if isinstance(value, str):
        return string_literal(value)
    raise Invalid("filter values must be strings, numbers or booleans", type="bad_filter")


def url_equals(url: str) -> str:
    return f"url == {string_literal(url)}"


def url_in(urls: Iterable[str]) -> str:
    return "url in [" + ", ".join(string_literal(url) for url in urls) + "]"


def url_after(cursor: str | None) -> str:
    """Urls strictly after the cursor; all urls when there is none."""
    return f"url > {string_literal(cursor)}" if cursor else 'url != ""'


def url_range(cursor: str | None, last: str) -> str:
    """Urls strictly after the cursor (if any), up to and including `last`."""
    return f"{url_after(cursor)} and url <= {string_literal(last)}"


def metadata_filter(equalities: Mapping[str, Scalar] | None) -> str:
    """`{"tags": "letter"}` → `metadata["tags"] == "letter"`, clauses joined by `and`."""
    if not equalities:
        return ""
    clauses = []
    for key, value in equalities.items():
        if not isinstance(key, str) or not key:
            raise Invalid("filter keys must be non-empty strings", type="bad_filter")
        if any(part in key for part in KEY_FORBIDDEN) or any(ord(char) < 0x20 for char in key):
            raise Invalid(
                f'filter key {key[:100]!r} cannot be matched: keys may not hold ", \\, ][ or control characters',
                type="bad_filter",
            )
        clauses.append(f"metadata[{string_literal(key)}] == {scalar_literal(value)}")
    return " and ".join(clauses)
